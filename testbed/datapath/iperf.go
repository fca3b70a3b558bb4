// Package datapath is the data-path benchmark of issue 5 (and the no-policy throughput baseline of
// issue 7): on a fresh testbed it measures iperf3 TCP throughput and 64-byte UDP packets per second
// pod to pod across two hosts, beside two anchors measured in the same run: host to host over the
// same underlay, and the same pods over a VXLAN tunnel set up between the hosts for comparison.
//
// It owns only what it creates inside the testbed's namespaces: iperf3 servers (killed by pid), a
// VXLAN device named benchvx0 in each host, and routes with protocol static labelled in the output
// ("installed by the benchmark"). It must never touch the root network namespace, Terrace's own
// routes (protocols 80 and 81) or any process it did not start.
package datapath

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Result is one iperf3 run as the receiver saw it.
type Result struct {
	Seconds     float64
	BitsPerSec  float64
	Packets     int64 // UDP: datagrams received (sent minus lost)
	LostPackets int64 // UDP
	// SenderCPU and ReceiverCPU are the iperf3 processes' CPU use in percent of one CPU (0 when
	// iperf3 did not report it). Softirq work done in a process's context is charged to it, and on
	// veths every hop of a packet runs in the sender's softirq, so SenderCPU per packet is the cost
	// of the whole path, which stays comparable when other load steals time from the run.
	SenderCPU, ReceiverCPU float64
}

// SentPackets is the number of UDP datagrams the client sent.
func (r Result) SentPackets() int64 { return r.Packets + r.LostPackets }

// LossPercent is the share of sent UDP datagrams that did not arrive.
func (r Result) LossPercent() float64 {
	if r.SentPackets() == 0 {
		return 0
	}
	return 100 * float64(r.LostPackets) / float64(r.SentPackets())
}

// SenderCPUPerUnit is the sender's CPU time per sent datagram (UDP, in µs) or per Gbit received
// (TCP, in ms); 0 when iperf3 reported no CPU figure.
func (r Result) SenderCPUPerUnit(udp bool) float64 {
	cpuSec := r.SenderCPU / 100 * r.Seconds
	switch {
	case cpuSec <= 0:
		return 0
	case udp && r.SentPackets() > 0:
		return cpuSec / float64(r.SentPackets()) * 1e6
	case !udp && r.BitsPerSec > 0:
		return cpuSec / (r.BitsPerSec * r.Seconds / 1e9) * 1e3
	}
	return 0
}

// PacketsPerSec is the UDP receive rate.
func (r Result) PacketsPerSec() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Packets) / r.Seconds
}

type iperfSum struct {
	Seconds     float64  `json:"seconds"`
	Bytes       int64    `json:"bytes"`
	BitsPerSec  float64  `json:"bits_per_second"`
	Packets     *int64   `json:"packets"`
	LostPackets *int64   `json:"lost_packets"`
	Sender      *bool    `json:"sender"`
	JitterMS    *float64 `json:"jitter_ms"`
}

type iperfOutput struct {
	Error string `json:"error"`
	End   struct {
		Sum         *iperfSum `json:"sum"`
		SumReceived *iperfSum `json:"sum_received"`
		CPU         *struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
}

// ParseIperf reads the JSON an iperf3 client prints with -J. udp selects the datagram figures
// (received = sent - lost); for TCP the receiver's throughput is taken. iperf3's own error (e.g.
// "unable to connect to server") is returned as an error.
func ParseIperf(data []byte, udp bool) (Result, error) {
	var out iperfOutput
	if err := json.Unmarshal(data, &out); err != nil {
		return Result{}, fmt.Errorf("parse iperf3 output: %w", err)
	}
	if out.Error != "" {
		return Result{}, fmt.Errorf("parse iperf3 output: iperf3 reported: %s", out.Error)
	}
	s := out.End.SumReceived
	if s == nil {
		s = out.End.Sum
	}
	if s == nil {
		return Result{}, errors.New("parse iperf3 output: no end.sum_received or end.sum")
	}
	if s.Seconds <= 0 || s.BitsPerSec < 0 || s.Bytes < 0 {
		return Result{}, fmt.Errorf("parse iperf3 output: implausible summary (seconds %v, bits/s %v, bytes %d)", s.Seconds, s.BitsPerSec, s.Bytes)
	}
	r := Result{Seconds: s.Seconds, BitsPerSec: s.BitsPerSec}
	if c := out.End.CPU; c != nil {
		// Only a sane percentage of a few CPUs is kept; anything else is dropped, not trusted.
		if c.HostTotal >= 0 && c.HostTotal <= 1e4 && c.RemoteTotal >= 0 && c.RemoteTotal <= 1e4 {
			r.SenderCPU, r.ReceiverCPU = c.HostTotal, c.RemoteTotal
		}
	}
	if udp {
		if s.Packets == nil || s.LostPackets == nil {
			return Result{}, errors.New("parse iperf3 output: UDP summary without packets/lost_packets")
		}
		if *s.Packets < 0 || *s.LostPackets < 0 || *s.LostPackets > *s.Packets {
			return Result{}, fmt.Errorf("parse iperf3 output: implausible packet counts %d sent, %d lost", *s.Packets, *s.LostPackets)
		}
		r.Packets = *s.Packets - *s.LostPackets
		r.LostPackets = *s.LostPackets
	}
	return r, nil
}
