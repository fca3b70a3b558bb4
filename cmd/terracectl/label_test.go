package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestApplyLabels(t *testing.T) {
	tests := []struct {
		name        string
		start       map[string]string
		args        []string
		overwrite   bool
		want        map[string]string
		wantChanged bool
		wantErr     string
	}{
		{name: "add to none", args: []string{"a=1"}, want: map[string]string{"a": "1"}, wantChanged: true},
		{name: "add and remove", start: map[string]string{"a": "1", "b": "2"}, args: []string{"c=3", "b-"},
			want: map[string]string{"a": "1", "c": "3"}, wantChanged: true},
		{name: "same value is no change", start: map[string]string{"a": "1"}, args: []string{"a=1"},
			want: map[string]string{"a": "1"}},
		{name: "changing needs overwrite", start: map[string]string{"a": "1"}, args: []string{"a=2"},
			wantErr: "use --overwrite"},
		{name: "overwrite", start: map[string]string{"a": "1"}, args: []string{"a=2"}, overwrite: true,
			want: map[string]string{"a": "2"}, wantChanged: true},
		{name: "remove missing is fine", start: map[string]string{"a": "1"}, args: []string{"zz-"},
			want: map[string]string{"a": "1"}},
		{name: "remove last gives nil", start: map[string]string{"a": "1"}, args: []string{"a-"}, wantChanged: true},
		{name: "empty value allowed", args: []string{"a="}, want: map[string]string{"a": ""}, wantChanged: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := parseLabelArgs(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			before := cloneMap(tt.start)
			got, changed, err := applyLabels(tt.start, ch, tt.overwrite)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			if changed != tt.wantChanged {
				t.Errorf("changed = %v", changed)
			}
			if diff := cmp.Diff(before, tt.start); diff != "" {
				t.Errorf("input map modified:\n%s", diff)
			}
		})
	}
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestParseLabelArgsErrors(t *testing.T) {
	for _, args := range [][]string{{"novalue"}, {"=v"}, {"-"}, {"a=1", "a-"}} {
		_, err := parseLabelArgs(args)
		if err == nil || exitCode(err) != exitInput {
			t.Errorf("parseLabelArgs(%q) = %v, want a usage error", args, err)
		}
	}
}
