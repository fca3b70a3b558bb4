package datapath

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const udpJSON = `{"start":{},"intervals":[],"end":{"streams":[],
 "sum":{"start":0,"end":1.000078,"seconds":1.000078,"bytes":19870080,"bits_per_second":158956507.1,"jitter_ms":0.002,"lost_packets":18224,"packets":310470,"lost_percent":5.87,"sender":true},
 "sum_sent":{"seconds":1.000078,"bytes":19870080,"bits_per_second":158956507.1,"lost_packets":0,"packets":310470,"sender":true},
 "sum_received":{"seconds":1.000078,"bytes":18703744,"bits_per_second":149618281.7,"jitter_ms":0.002,"lost_packets":18224,"packets":310470,"sender":false},
 "cpu_utilization_percent":{"host_total":99.5,"host_user":10.1,"host_system":89.4,"remote_total":41.2,"remote_user":5,"remote_system":36.2}}}`

const tcpJSON = `{"end":{"sum_sent":{"seconds":3.0,"bytes":9,"bits_per_second":2.8e10,"retransmits":0,"sender":true},
 "sum_received":{"seconds":3.0005,"bytes":10287000000,"bits_per_second":2.7426862244e10,"sender":true}}}`

func TestParseIperf(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		udp     bool
		want    Result
		wantErr string
	}{
		{name: "tcp", in: tcpJSON, want: Result{Seconds: 3.0005, BitsPerSec: 2.7426862244e10}},
		{name: "udp", in: udpJSON, udp: true, want: Result{Seconds: 1.000078, BitsPerSec: 149618281.7, Packets: 292246, LostPackets: 18224,
			SenderCPU: 99.5, ReceiverCPU: 41.2}},
		{name: "implausible cpu figure dropped", in: `{"end":{"sum_received":{"seconds":1,"bits_per_second":1e9},"cpu_utilization_percent":{"host_total":-3,"remote_total":50}}}`,
			want: Result{Seconds: 1, BitsPerSec: 1e9}},
		{name: "udp old iperf without sum_received", udp: true,
			in:   `{"end":{"sum":{"seconds":2,"bytes":640,"bits_per_second":2560,"packets":12,"lost_packets":2}}}`,
			want: Result{Seconds: 2, BitsPerSec: 2560, Packets: 10, LostPackets: 2}},
		{name: "iperf error", in: `{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}`, wantErr: "Connection refused"},
		{name: "no summary", in: `{"end":{}}`, wantErr: "no end.sum"},
		{name: "udp without packets", udp: true, in: tcpJSON, wantErr: "without packets"},
		{name: "lost more than sent", udp: true, in: `{"end":{"sum":{"seconds":1,"bits_per_second":1,"packets":1,"lost_packets":2}}}`, wantErr: "implausible packet"},
		{name: "zero seconds", in: `{"end":{"sum_received":{"seconds":0,"bits_per_second":1}}}`, wantErr: "implausible summary"},
		{name: "not json", in: `iperf3: error - unable to connect`, wantErr: "parse iperf3 output"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseIperf([]byte(tc.in), tc.udp)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseIperf error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	r, _ := ParseIperf([]byte(udpJSON), true)
	if pps := r.PacketsPerSec(); math.Abs(pps-292223.2) > 1 {
		t.Errorf("PacketsPerSec = %v, want ~292223", pps)
	}
	if pps := (Result{}).PacketsPerSec(); pps != 0 {
		t.Errorf("PacketsPerSec of empty result = %v", pps)
	}
	if got := r.LossPercent(); math.Abs(got-5.87) > 0.01 {
		t.Errorf("LossPercent = %v, want ~5.87", got)
	}
	// 0.995 CPU-seconds over 1.000078 s for 310,470 datagrams: 3.205 µs each.
	if got := r.SenderCPUPerUnit(true); math.Abs(got-3.205) > 0.001 {
		t.Errorf("SenderCPUPerUnit(udp) = %v, want ~3.205 µs", got)
	}
	// 0.5 CPU-seconds for 10 Gbit: 50 ms per Gbit.
	if got := (Result{Seconds: 1, BitsPerSec: 10e9, SenderCPU: 50}).SenderCPUPerUnit(false); math.Abs(got-50) > 1e-9 {
		t.Errorf("SenderCPUPerUnit(tcp) = %v, want 50 ms", got)
	}
	if got := (Result{Seconds: 1, BitsPerSec: 10e9}).SenderCPUPerUnit(false); got != 0 {
		t.Errorf("SenderCPUPerUnit without a CPU figure = %v, want 0", got)
	}
}

func FuzzParseIperf(f *testing.F) {
	f.Add([]byte(udpJSON), true)
	f.Add([]byte(tcpJSON), false)
	f.Add([]byte(`{"end":{"sum":{"seconds":1,"packets":-1,"lost_packets":0}}}`), true)
	f.Fuzz(func(t *testing.T, data []byte, udp bool) {
		r, err := ParseIperf(data, udp)
		if err != nil {
			return
		}
		if r.Seconds <= 0 || r.Packets < 0 || r.LostPackets < 0 || r.BitsPerSec < 0 || r.SenderCPU < 0 || r.ReceiverCPU < 0 {
			t.Fatalf("accepted implausible result %+v", r)
		}
		if !udp && (r.Packets != 0 || r.LostPackets != 0) {
			t.Fatalf("TCP result with packet counts %+v", r)
		}
	})
}
