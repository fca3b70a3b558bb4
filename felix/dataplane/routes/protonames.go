package routes

import (
	"fmt"
	"os"
	"path/filepath"
)

// ProtocolNamesFile is where iproute2 looks up protocol names, so "ip route" shows ours by name.
const ProtocolNamesFile = "/etc/iproute2/rt_protos.d/terrace.conf"

// WriteProtocolNames writes the iproute2 names of Terrace's route protocols to path (normally
// ProtocolNamesFile; terrace-node calls it at start). It replaces the file atomically.
func WriteProtocolNames(path string) error {
	body := fmt.Sprintf("# Written by terrace-node: route protocols owned by Terrace.\n%d terrace\n%d terrace-bgp\n", ProtocolTerrace, ProtocolTerraceBGP)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write protocol names: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return fmt.Errorf("write protocol names: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write protocol names: %w", err)
	}
	return nil
}
