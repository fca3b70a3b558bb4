package main

import (
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
			if err := dataOrText("version", output); err != nil {
				return err
			}
			if output != outTable {
				return writeData(e.out, output, v)
			}
			e.printf("terracectl %s (%s)\n", v.Version, v.Go)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml (default: one line)")
	return cmd
}
