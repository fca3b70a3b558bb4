package main

import (
	"encoding/json"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/terracenet/terrace/cmd/internal/cliconf"
)

func newVersionCmd(e *env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print terracectl's version",
		Args:  rangeArgs(0, 0, "version"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := struct {
				Version string `json:"version"`
				Go      string `json:"go"`
			}{cliconf.VersionString(), runtime.Version()}
			switch output {
			case outJSON:
				b, _ := json.MarshalIndent(v, "", "  ")
				e.printf("%s\n", b)
			case outTable:
				e.printf("terracectl %s (%s)\n", v.Version, v.Go)
			default:
				return usageErrorf("version: unknown output format %q: want json", output)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json (default: one line)")
	return cmd
}
