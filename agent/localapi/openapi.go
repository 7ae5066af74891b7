package localapi

import _ "embed"

// OpenAPI is the OpenAPI 3 description of the local API (openapi.yaml),
// served by the agent at PathOpenAPI.
//
//go:embed openapi.yaml
var OpenAPI []byte
