package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/datastore/api"
)

// doc is one document of the user's input with where it came from.
type doc struct {
	file string // "stdin" for -f -
	api.Document
	problem error // set when the document must not be written: decode or validation failure
}

// label names a document for messages: `document 3 (GlobalNetworkPolicy/foo, pols.yaml:12)`.
func (d doc) label() string {
	var parts []string
	if d.Resource != nil {
		m := d.Resource.GetObjectMeta()
		name := m.Name
		if m.Namespace != "" {
			name = m.Namespace + "/" + name
		}
		parts = append(parts, kindName(d.Resource)+"/"+name)
	}
	parts = append(parts, fmt.Sprintf("%s:%d", d.file, d.Line))
	return fmt.Sprintf("document %d (%s)", d.Index+1, strings.Join(parts, ", "))
}

// describeErr renders a problem without repeating what label already says.
func describeErr(err error) string {
	var ve *api.ValidationError
	if errors.As(err, &ve) && len(ve.Fields) > 0 {
		parts := make([]string, len(ve.Fields))
		for i, f := range ve.Fields {
			parts[i] = f.Path + ": " + f.Reason
		}
		return oneLine(strings.Join(parts, "; "))
	}
	return oneLine(err.Error())
}

func addFileFlag(cmd *cobra.Command, files *[]string, what string) {
	cmd.Flags().StringArrayVarP(files, "filename", "f", nil, what+" (a file, or - for stdin; repeatable)")
}

// readDocs reads and decodes every -f input. Each document is checked as the datastore will check
// it (defaults, then validation) so invalid ones are reported, with exit status 2, before anything
// is written (then nothing is) and even when etcd is down. An input that cannot be split at all, or
// holds no document, is an error; one holding only empty Lists gives no documents and no error.
func readDocs(files []string, in io.Reader, namespace string, nsExplicit, validate bool) ([]doc, error) {
	var out []doc
	for _, f := range files {
		var data []byte
		var err error
		name := f
		if f == "-" {
			name = "stdin"
			data, err = io.ReadAll(in)
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, &exitError{code: exitInput, err: fmt.Errorf("read %s: %w", name, err)}
		}
		docs, lists, err := api.DecodeManifest(data)
		if err != nil {
			return nil, &exitError{code: exitInput, err: fmt.Errorf("%s: %w", name, err)}
		}
		if len(docs) == 0 && lists == 0 {
			// An empty List is zero resources on purpose (`get -o yaml` of nothing, re-applied);
			// a file with no document at all is most likely the wrong file.
			return nil, &exitError{code: exitInput, err: fmt.Errorf("%s: no resources found", name)}
		}
		for _, d := range docs {
			dd := doc{file: name, Document: d, problem: d.Err}
			if dd.problem == nil {
				dd.problem = placeNamespace(d.Resource, namespace, nsExplicit)
			}
			if dd.problem == nil && validate {
				dd.problem = check(d.Resource)
			}
			if dd.problem == nil && !validate {
				// delete and get -f read documents without validating them, but a missing name
				// must not reach the datastore (delete node "" swept every unowned IPAM block).
				dd.problem = checkName(d.Resource)
			}
			out = append(out, dd)
		}
	}
	return out, nil
}

// placeNamespace gives a namespaced resource without one the -n namespace, and refuses a
// namespace on a cluster-scoped kind or one that contradicts -n (as kubectl does).
func placeNamespace(r api.Resource, namespace string, explicit bool) error {
	info, err := api.KindOf(r)
	if err != nil {
		return err
	}
	m := r.GetObjectMeta()
	if !info.Namespaced {
		if m.Namespace != "" {
			return fmt.Errorf("metadata.namespace: %s is not namespaced", info.Kind)
		}
		return nil
	}
	switch {
	case m.Namespace == "":
		m.Namespace = namespace
	case explicit && m.Namespace != namespace:
		return fmt.Errorf("metadata.namespace: %q does not match --namespace %q", m.Namespace, namespace)
	}
	return nil
}

// check validates a copy so the user's document is written as given (the datastore applies
// defaults itself).
func check(r api.Resource) error {
	c, err := api.Clone(r)
	if err != nil {
		return err
	}
	api.SetDefaults(c)
	return api.Validate(c)
}
