package agent

import (
	"time"

	"github.com/kurer/kurer/schemas"
)

// TypeInfo is what the agent needs to know about a message type.
type TypeInfo struct {
	// Receipt marks the application receipt types.
	Receipt bool
	// DefaultTTL is the lifetime of a message without an explicit expiry.
	DefaultTTL time.Duration
}

// Schemas validates business messages; schemas.Default() provides it.
type Schemas interface {
	// Info describes a known type.
	Info(typeName string) (TypeInfo, bool)
	// Validate checks melding.json of a message of typeName with its
	// payload file names (melding.json excluded); a *schemas.ValidationError
	// lists every error with its path.
	Validate(typeName string, melding []byte, files []string) error
}

type registrySchemas struct{ r *schemas.Registry }

func defaultSchemas() Schemas { return registrySchemas{schemas.Default()} }

func (s registrySchemas) Info(name string) (TypeInfo, bool) {
	ti, ok := s.r.Lookup(name)
	if !ok {
		return TypeInfo{}, false
	}
	return TypeInfo{Receipt: ti.Receipt, DefaultTTL: ti.DefaultTTL}, true
}

func (s registrySchemas) Validate(name string, melding []byte, files []string) error {
	return s.r.Validate(name, melding, files)
}
