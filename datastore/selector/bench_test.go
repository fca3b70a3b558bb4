package selector

import (
	"fmt"
	"testing"
)

// benchLabels is a realistic pod label set: Kubernetes labels plus Calico's automatic ones.
var benchLabels = labels{
	"app":                                 "web",
	"tier":                                "frontend",
	"env":                                 "prod",
	"version":                             "v1.2.3",
	"pod-template-hash":                   "5d8f7c9b6",
	"projectcalico.org/namespace":         "shop",
	"projectcalico.org/orchestrator":      "k8s",
	"projectcalico.org/serviceaccount":    "default",
	"app.kubernetes.io/name":              "storefront",
	"app.kubernetes.io/part-of":           "shop",
	"topology.kubernetes.io/zone":         "zone-a",
	"security.terrace.dev/quarantine-tag": "none",
}

var benchSelectors = []struct{ name, sel string }{
	{"all", "all()"},
	{"eq", "app == 'web'"},
	{"has", "has(projectcalico.org/namespace)"},
	{"policy", "app == 'web' && env in {'prod','staging'} && !has(quarantine) && tier starts with 'front'"},
	{"or-miss", "app == 'db' || app == 'cache' || app == 'queue' || tier ends with 'back'"},
	{"bigset", "app.kubernetes.io/name in {'a','b','c','d','e','f','g','h','i','j','storefront'}"},
}

func BenchmarkEvaluate(b *testing.B) {
	for _, bs := range benchSelectors {
		sel := MustParse(bs.sel)
		b.Run(bs.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sel.Evaluate(benchLabels)
			}
		})
	}
}

func BenchmarkEvaluateLabels(b *testing.B) {
	sel := MustParse(benchSelectors[3].sel)
	l := &fakeLabels{m: benchLabels}
	b.ReportAllocs()
	for b.Loop() {
		sel.EvaluateLabels(l)
	}
}

func BenchmarkParse(b *testing.B) {
	for _, bs := range benchSelectors {
		b.Run(bs.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(bs.sel); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMatchMany is the felix-shaped workload: one selector against many endpoints.
func BenchmarkMatchMany(b *testing.B) {
	const n = 10000
	eps := make([]labels, n)
	for i := range eps {
		eps[i] = labels{"app": fmt.Sprintf("app-%d", i%50), "env": []string{"prod", "dev"}[i%2],
			"projectcalico.org/namespace": fmt.Sprintf("ns-%d", i%20)}
	}
	sel := MustParse("app in {'app-1','app-2','app-3'} && env == 'prod' && !global()")
	b.ReportAllocs()
	for b.Loop() {
		matched := 0
		for _, l := range eps {
			if sel.Evaluate(l) {
				matched++
			}
		}
		if matched == 0 {
			b.Fatal("no endpoint matched")
		}
	}
}
