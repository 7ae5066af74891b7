// Package config loads kurer's YAML configuration files and secrets.
//
// Config flows one way (STYLE.md 3): the command reads its file with Load
// into one Config struct, fills secrets with Secret, validates, and passes
// the result to constructors. Components never read files, flags or the
// environment themselves.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize is the largest configuration file Load accepts, checked
// before any parsing.
const MaxFileSize = 1 << 20

// MaxSecretSize is the largest secret file Secret reads.
const MaxSecretSize = 64 << 10

// ErrNoSecret is returned by Secret when neither the variable nor the file
// is set.
var ErrNoSecret = errors.New("secret not set")

// Validator is implemented by configuration structs that check themselves;
// Load calls Validate after a successful decode.
type Validator interface {
	Validate() error
}

// Load reads the YAML file at path into dst (a pointer to a struct). The
// decode is strict: a field dst does not have, a value of the wrong type
// or a second YAML document is an error, and errors name the line. Files
// larger than MaxFileSize are refused before parsing; an empty file is an
// error. If dst implements Validator, its Validate is called last.
func Load(path string, dst any) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > MaxFileSize {
		return fmt.Errorf("config %s: file is %d bytes, limit %d", path, st.Size(), MaxFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return fmt.Errorf("config %s: file larger than %d bytes", path, MaxFileSize)
	}
	if err := Parse(data, dst); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Parse decodes YAML bytes into dst with the same rules as Load.
func Parse(data []byte, dst any) error {
	if len(data) > MaxFileSize {
		return fmt.Errorf("configuration is %d bytes, limit %d", len(data), MaxFileSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("configuration is empty")
		}
		return err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return err
		}
		return fmt.Errorf("line %d: a second YAML document is not allowed", extra.Line)
	}
	if v, ok := dst.(Validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("invalid: %w", err)
		}
	}
	return nil
}

// Secret returns a secret from the environment variable envName or, if
// that is unset or empty, from the file at filePath (at most MaxSecretSize
// bytes, trailing CR/LF trimmed). The environment wins when both are set.
// Either name may be empty to skip that source. Neither the secret nor any
// part of it appears in an error.
func Secret(envName, filePath string) (string, error) {
	if envName != "" {
		if v := os.Getenv(envName); v != "" {
			return v, nil
		}
	}
	if filePath == "" {
		if envName == "" {
			return "", ErrNoSecret
		}
		return "", fmt.Errorf("%w: set $%s", ErrNoSecret, envName)
	}
	f, err := os.Open(filePath)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSecretSize+1))
	if err != nil {
		return "", fmt.Errorf("read secret %s: %w", filePath, err)
	}
	if len(data) > MaxSecretSize {
		return "", fmt.Errorf("secret file %s is larger than %d bytes", filePath, MaxSecretSize)
	}
	s := strings.TrimRight(string(data), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%w: secret file %s is empty", ErrNoSecret, filePath)
	}
	return s, nil
}

// Duration is a time.Duration written in YAML as a Go duration string:
// "30s", "5m", "1h30m", "250ms". A bare number is an error (no unit). Use
// time.Duration(d) to convert.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: duration must be a string such as \"30s\"", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: duration %q: want a value such as \"30s\", \"5m\" or \"1h\"", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalText implements encoding.TextUnmarshaler (JSON, flags).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want a value such as \"30s\", \"5m\" or \"1h\"", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// String returns the duration in Go notation, e.g. "1m30s".
func (d Duration) String() string { return time.Duration(d).String() }
