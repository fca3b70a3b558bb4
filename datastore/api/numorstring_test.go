package api

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestASNumberUnmarshal(t *testing.T) {
	tests := []struct {
		in      string
		want    ASNumber
		wantErr bool
	}{
		{`64512`, 64512, false},
		{`"64512"`, 64512, false},
		{`"1.10"`, 1<<16 + 10, false},
		{`"65535.65535"`, 4294967295, false},
		{`4294967295`, 4294967295, false},
		{`4294967296`, 0, true},
		{`-1`, 0, true},
		{`"65536.1"`, 0, true},
		{`"1.65536"`, 0, true},
		{`"1."`, 0, true},
		{`"abc"`, 0, true},
		{`1.5`, 0, true},
		{`true`, 0, true},
	}
	for _, tt := range tests {
		var got ASNumber
		err := json.Unmarshal([]byte(tt.in), &got)
		if (err != nil) != tt.wantErr {
			t.Errorf("unmarshal %s: err = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("unmarshal %s = %d, want %d", tt.in, got, tt.want)
		}
		if err == nil {
			b, _ := json.Marshal(got)
			var back ASNumber
			if err := json.Unmarshal(b, &back); err != nil || back != got {
				t.Errorf("round trip of %d via %s = %d, %v", got, b, back, err)
			}
		}
	}
}

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		in      string
		want    Port
		wantErr bool
	}{
		{"80", SinglePort(80), false},
		{"1000:2000", Port{MinPort: 1000, MaxPort: 2000}, false},
		{"1:65535", Port{MinPort: 1, MaxPort: 65535}, false},
		{"http", Port{PortName: "http"}, false},
		{"0", Port{}, true},
		{"65536", Port{}, true},
		{"2000:1000", Port{}, true},
		{"1:x", Port{}, true},
		{"1:2:3", Port{}, true},
		{"", Port{}, true},
	}
	for _, tt := range tests {
		got, err := ParsePortRange(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParsePortRange(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParsePortRange(%q) (-want +got):\n%s", tt.in, diff)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("ParsePortRange(%q).String() = %q", tt.in, got.String())
		}
	}
}

func TestPortJSON(t *testing.T) {
	tests := []struct {
		in, out string
		want    Port
	}{
		{`80`, `80`, SinglePort(80)},
		{`"80"`, `80`, SinglePort(80)},
		{`"10:20"`, `"10:20"`, Port{MinPort: 10, MaxPort: 20}},
		{`"http"`, `"http"`, Port{PortName: "http"}},
		{`"1:2:3"`, `"1:2:3"`, Port{PortName: "1:2:3"}}, // kept for Validate to report
	}
	for _, tt := range tests {
		var p Port
		if err := json.Unmarshal([]byte(tt.in), &p); err != nil {
			t.Fatalf("unmarshal %s: %v", tt.in, err)
		}
		if diff := cmp.Diff(tt.want, p); diff != "" {
			t.Errorf("unmarshal %s (-want +got):\n%s", tt.in, diff)
		}
		b, err := json.Marshal(p)
		if err != nil || string(b) != tt.out {
			t.Errorf("marshal %+v = %s, %v; want %s", p, b, err, tt.out)
		}
	}
	var p Port
	if err := json.Unmarshal([]byte(`1.5`), &p); err == nil {
		t.Errorf("unmarshal 1.5 as port: want error")
	}
}

func TestProtocol(t *testing.T) {
	tests := []struct {
		in         string
		num        uint8
		ok         bool
		ports, icm bool
	}{
		{`"TCP"`, 6, true, true, false},
		{`"tcp"`, 6, true, true, false},
		{`"UDP"`, 17, true, true, false},
		{`"ICMP"`, 1, true, false, true},
		{`"ICMPv6"`, 58, true, false, true},
		{`"SCTP"`, 132, true, true, false},
		{`"UDPLite"`, 136, true, true, false},
		{`6`, 6, true, true, false},
		{`"17"`, 17, true, true, false},
		{`47`, 47, true, false, false},
		{`0`, 0, false, false, false},
		{`256`, 0, false, false, false},
		{`"GRE"`, 0, false, false, false},
	}
	for _, tt := range tests {
		var p Protocol
		if err := json.Unmarshal([]byte(tt.in), &p); err != nil {
			t.Fatalf("unmarshal %s: %v", tt.in, err)
		}
		n, ok := p.IANANumber()
		if n != tt.num || ok != tt.ok || p.SupportsPorts() != tt.ports || p.IsICMP() != tt.icm {
			t.Errorf("%s: number=%d,%v ports=%v icmp=%v; want %d,%v ports=%v icmp=%v",
				tt.in, n, ok, p.SupportsPorts(), p.IsICMP(), tt.num, tt.ok, tt.ports, tt.icm)
		}
	}
}

func TestNormalizeCIDR(t *testing.T) {
	tests := []struct{ in, want string }{
		{"198.18.0.5/16", "198.18.0.0/16"},
		{"198.18.0.5", "198.18.0.5/32"},
		{"2001:db8:1000::1/48", "2001:db8:1000::/48"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"::ffff:198.18.0.1/120", "198.18.0.0/24"},
		{"not-a-cidr", ""},
		{"198.18.0.0/33", ""},
		{"fe80::1%eth0", ""},
	}
	for _, tt := range tests {
		got, err := NormalizeCIDR(tt.in)
		if (err != nil) != (tt.want == "") || got != tt.want {
			t.Errorf("NormalizeCIDR(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
