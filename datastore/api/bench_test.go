package api

import (
	"fmt"
	"strings"
	"testing"
)

func manifestOf(n int) []byte {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `---
apiVersion: terrace.dev/v1
kind: WorkloadEndpoint
metadata:
  name: host-1-k8s-pod%d-eth0
  namespace: prod
  labels: {app: web, tier: frontend}
spec:
  node: host-1
  interfaceName: trc0123456789a
  ipNetworks: [198.18.%d.%d/32]
  ports: [{name: http, protocol: TCP, port: 80}]
`, i, i/256%256, i%256)
	}
	return []byte(b.String())
}

// BenchmarkDecodeValidate measures decoding plus defaulting and validation per document.
func BenchmarkDecodeValidate(b *testing.B) {
	data := manifestOf(1000)
	b.ResetTimer()
	for b.Loop() {
		docs, err := Decode(data)
		if err != nil || len(docs) != 1000 {
			b.Fatalf("Decode: %v, %d docs", err, len(docs))
		}
		for _, d := range docs {
			if d.Err != nil {
				b.Fatal(d.Err)
			}
			SetDefaults(d.Resource)
			if err := Validate(d.Resource); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000)/1000, "µs/doc")
}

// BenchmarkUnmarshal measures reading one stored resource back, the datastore's hot path.
func BenchmarkUnmarshal(b *testing.B) {
	docs, _ := Decode(manifestOf(1))
	SetDefaults(docs[0].Resource)
	js, err := Marshal(docs[0].Resource)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Unmarshal(js); err != nil {
			b.Fatal(err)
		}
	}
}
