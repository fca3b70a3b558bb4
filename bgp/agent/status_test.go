package agent

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzStatusFromDetails: whatever a daemon serves, reading it back never panics, and what reads
// back renders and reads again to the same status.
func FuzzStatusFromDetails(f *testing.F) {
	f.Add([]byte(`{"asn":64512,"routerID":"192.0.2.1","peers":[{"address":"192.0.2.0","type":"node","asn":65000,"state":"established","uptime":5000000000,"received":1,"accepted":1,"advertised":2}],"routes":{"learned":1,"installed":1}}`))
	f.Add([]byte(`{"peers":"x"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m map[string]any
		if json.Unmarshal(data, &m) != nil {
			return
		}
		st, err := StatusFromDetails("running", "", m)
		if err != nil {
			return
		}
		again, err := StatusFromDetails("running", "", roundTrip(t, st.Details()))
		if err != nil {
			t.Fatalf("re-reading a rendered status: %v", err)
		}
		if diff := cmp.Diff(st, again, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Fatalf("status changed through render and read (-first +second):\n%s", diff)
		}
	})
}
