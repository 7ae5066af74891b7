package gateway

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/kurer/kurer/internal/errs"
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

// TestOpenAPIErrorCodes checks that the enum of ErrorBody.code in
// openapi.yaml is exactly the catalogue in internal/errs: every code the
// gateway can send is listed, and nothing else.
func TestOpenAPIErrorCodes(t *testing.T) {
	type schema struct {
		Ref        string            `yaml:"$ref"`
		Enum       []string          `yaml:"enum"`
		Properties map[string]schema `yaml:"properties"`
	}
	var spec struct {
		Components struct {
			Schemas map[string]schema `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(OpenAPI, &spec); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	code, ok := spec.Components.Schemas["ErrorBody"].Properties["code"]
	if !ok {
		t.Fatal("openapi.yaml: ErrorBody has no code property")
	}
	if name, ok := strings.CutPrefix(code.Ref, "#/components/schemas/"); ok {
		code = spec.Components.Schemas[name]
	}
	documented := map[string]bool{}
	for _, c := range code.Enum {
		if documented[c] {
			t.Errorf("openapi.yaml: ErrorBody.code lists %s twice", c)
		}
		documented[c] = true
	}
	catalogue := map[string]bool{}
	for _, c := range errs.Codes() {
		catalogue[string(c)] = true
		if !documented[string(c)] {
			t.Errorf("openapi.yaml: ErrorBody.code lacks catalogue code %s", c)
		}
	}
	for c := range documented {
		if !catalogue[c] {
			t.Errorf("openapi.yaml: ErrorBody.code lists %s, which is not in the catalogue", c)
		}
	}
	if len(catalogue) < 20 {
		t.Fatalf("only %d catalogue codes", len(catalogue))
	}
}
