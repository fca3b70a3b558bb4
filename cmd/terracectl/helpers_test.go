package main

import (
	"encoding/json"

	"sigs.k8s.io/yaml"
)

func yamlToMap(b []byte) (map[string]any, error) {
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	err = json.Unmarshal(j, &m)
	return m, err
}
