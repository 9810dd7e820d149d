package configs

import "go.yaml.in/yaml/v3"

// Key returns the key node at path in a mapping, for an error's line; it
// falls back to the deepest node found (node itself if the first key is
// missing).
func Key(node *yaml.Node, path ...string) *yaml.Node {
	at := node
	for _, key := range path {
		k, v := entry(node, key)
		if k == nil {
			break
		}
		at, node = k, v
	}
	return at
}

// Value returns the value node at path in a mapping, or nil.
func Value(node *yaml.Node, path ...string) *yaml.Node {
	for _, key := range path {
		if _, node = entry(node, key); node == nil {
			return nil
		}
	}
	return node
}

// entry finds key in a mapping node: its key and value nodes, or nils.
func entry(m *yaml.Node, key string) (k, v *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}
