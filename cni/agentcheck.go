package cni

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/terracenet/terrace/node/nodeapi"
)

// CheckCall applies to a command sent by the terrace-cni shim the checks skel applies in a plugin
// process before it calls the plugin: the CNI_* variables the command requires, the container ID
// and interface name, the network name, and the configuration's version. The shim links no skel
// (it costs every pod start-up time), so the agent does it; a runtime gets the same error, code
// and message, whether the agent or terrace-cni-etcd (which is skel) answers.
func CheckCall(req nodeapi.CNIRequest) *types.Error {
	vars := []struct {
		name, val string
		required  bool
		validate  func(string) *types.Error
	}{
		{"CNI_CONTAINERID", req.ContainerID, true, utils.ValidateContainerID},
		{"CNI_NETNS", req.Netns, req.Command != "DEL", nil},
		{"CNI_IFNAME", req.IfName, true, utils.ValidateInterfaceName},
		{"CNI_PATH", req.Path, true, nil},
	}
	var missing []string
	for _, v := range vars {
		switch {
		case v.val == "" && v.required:
			missing = append(missing, v.name)
		case v.val != "" && v.required && v.validate != nil:
			if err := v.validate(v.val); err != nil {
				return err
			}
		}
	}
	if len(missing) > 0 {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("required env variables [%s] missing", strings.Join(missing, ",")), "")
	}
	var conf struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(req.StdinData, &conf); err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("error unmarshall network config: %v", err), "")
	}
	if conf.Name == "" {
		return types.NewError(types.ErrInvalidNetworkConfig, "missing network name", "")
	}
	if err := utils.ValidateNetworkName(conf.Name); err != nil {
		return err
	}
	confVersion, err := (&version.ConfigDecoder{}).Decode(req.StdinData)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	if req.Command == "CHECK" {
		ok, err := version.GreaterThanOrEqualTo(confVersion, "0.4.0")
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, err.Error(), "")
		}
		if !ok {
			return types.NewError(types.ErrIncompatibleCNIVersion, "config version does not allow CHECK", "")
		}
		newer := false
		for _, v := range SupportedVersions.SupportedVersions() {
			if ge, err := version.GreaterThanOrEqualTo(v, confVersion); err == nil && ge {
				newer = true
				break
			}
		}
		if !newer {
			return types.NewError(types.ErrIncompatibleCNIVersion, "plugin version does not allow CHECK", "")
		}
	}
	if verErr := (&version.Reconciler{}).Check(confVersion, SupportedVersions); verErr != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "incompatible CNI versions", verErr.Details())
	}
	return nil
}
