package gateway

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/kurer/kurer/internal/openapitest"
)

// TestOpenAPICoversRoutes checks that every route the gateway serves, on
// either listener, is described in openapi.yaml with its method.
func TestOpenAPICoversRoutes(t *testing.T) {
	var spec struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(OpenAPI, &spec); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	openapitest.Check(t, OpenAPI)
	s := &Server{}
	routes := []string{}
	for r := range s.apiRoutes() {
		routes = append(routes, r)
	}
	for r := range s.adminRoutes() {
		routes = append(routes, r)
	}
	if len(routes) < 20 {
		t.Fatalf("only %d routes found", len(routes))
	}
	for _, r := range routes {
		method, path, _ := strings.Cut(r, " ")
		ops, ok := spec.Paths[path]
		if !ok {
			t.Errorf("route %s: path not in openapi.yaml", r)
			continue
		}
		if _, ok := ops[strings.ToLower(method)]; !ok {
			t.Errorf("route %s: method not in openapi.yaml", r)
		}
	}
}
