package ipsets

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// SavedSet is one set as printed by "ipset save": Options holds the create options after the type
// (family, hashsize ...), Members the first word of each "add" line.
type SavedSet struct {
	Name    string
	Type    string
	Family  string
	Options []string
	Members []string
}

// ParseSave parses "ipset save" output for every set in the namespace, ours or not. It is strict
// so that truncated output is an error rather than a picture with members missing.
func ParseSave(data []byte) ([]*SavedSet, error) {
	var out []*SavedSet
	byName := map[string]*SavedSet{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "create":
			if len(f) < 3 {
				return nil, fmt.Errorf("parse ipset save line %d: short create", lineNo)
			}
			if _, dup := byName[f[1]]; dup {
				return nil, fmt.Errorf("parse ipset save line %d: set %q created twice", lineNo, f[1])
			}
			s := &SavedSet{Name: f[1], Type: f[2], Family: string(FamilyInet), Options: f[3:]}
			for i := 3; i+1 < len(f); i++ {
				if f[i] == "family" {
					s.Family = f[i+1]
				}
			}
			byName[s.Name] = s
			out = append(out, s)
		case "add":
			if len(f) < 3 {
				return nil, fmt.Errorf("parse ipset save line %d: short add", lineNo)
			}
			s, ok := byName[f[1]]
			if !ok {
				return nil, fmt.Errorf("parse ipset save line %d: add to unknown set %q", lineNo, f[1])
			}
			s.Members = append(s.Members, f[2])
		default:
			return nil, fmt.Errorf("parse ipset save line %d: unexpected %q", lineNo, f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read ipset save output: %w", err)
	}
	return out, nil
}

// Render prints sets in "ipset save" syntax.
func Render(sets []*SavedSet) string {
	var b strings.Builder
	for _, s := range sets {
		b.WriteString("create " + s.Name + " " + s.Type)
		for _, o := range s.Options {
			b.WriteString(" " + o)
		}
		b.WriteString("\n")
		for _, m := range s.Members {
			b.WriteString("add " + s.Name + " " + m + "\n")
		}
	}
	return b.String()
}
