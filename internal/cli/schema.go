package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kurer/kurer/schemas"
)

// maxValidateFiles caps how many payload files `schema validate` lists from
// --files, so a wrong directory (say, /) fails fast.
const maxValidateFiles = 10000

func newSchemaCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "List, show, export and check the message types and their JSON Schemas",
		Long: `Every kurer message carries a typed business message, melding.json, checked
against its type's JSON Schema (draft 2020-12) and the checks a schema cannot
express (mod-11 control digits, the document list against the envelope's
files, answer references). The types and schemas are built into the binary;
docs/message-types.md explains them.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newSchemaListCommand(), newSchemaShowCommand(), newSchemaValidateCommand(), newSchemaExportCommand())
	return cmd
}

type schemaListOptions struct {
	output string
}

// schemaTypeView is TypeInfo for output, with the TTL as a Go duration string.
type schemaTypeView struct {
	schemas.TypeInfo
	DefaultTTL string `json:"default_ttl"`
}

func newSchemaListCommand() *cobra.Command {
	var o schemaListOptions
	cmd := &cobra.Command{
		Use: "list",
		Example: `  kurer schema list
  kurer schema list -o json`,
		Short: "List the message types",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSchemaList(cmd.OutOrStdout(), o)
		},
	}
	cmd.Flags().StringVar(&o.output, "output", "text", "output format: text or json")
	return cmd
}

func runSchemaList(w io.Writer, o schemaListOptions) error {
	if o.output != "text" && o.output != "json" {
		return exitf(ExitUsage, "--output %q: want text or json", o.output)
	}
	types := schemas.Default().Types()
	business := 0
	for _, t := range types {
		if !t.Receipt {
			business++
		}
	}
	if o.output == "json" {
		views := make([]schemaTypeView, len(types))
		for i, t := range types {
			views[i] = schemaTypeView{TypeInfo: t, DefaultTTL: t.DefaultTTL.String()}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(views)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tTITLE\tTTL\tPAYLOAD\tANSWERS")
	for _, t := range types {
		payload := "optional"
		if t.PayloadRequired {
			payload = "required"
		}
		if t.DocumentList == "" && len(t.RequiredFiles) == 0 {
			payload = "none"
		}
		answers := "-"
		if len(t.Answers) > 0 {
			answers = strings.Join(t.Answers, ", ")
			if t.Receipt && len(t.Answers) == business {
				answers = "every non-receipt type"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Title, formatTTL(t.DefaultTTL.Hours()), payload, answers)
	}
	return tw.Flush()
}

// formatTTL shows whole days as "30d", else hours.
func formatTTL(hours float64) string {
	if hours >= 24 && int(hours)%24 == 0 {
		return fmt.Sprintf("%dd", int(hours)/24)
	}
	return fmt.Sprintf("%gh", hours)
}

func newSchemaShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show TYPE",
		Example: `  kurer schema show no.kurer.barnevern.sak.overforing.v1`,
		Short:   "Print a message type's JSON Schema",
		Long: `Print the JSON Schema of a message type as built into this binary. It refers
to shared definitions in felles.schema.json; "kurer schema export DIR" writes
all schema files for use with other tools.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, ok := schemas.Default().Schema(args[0])
			if !ok {
				return unknownType(args[0])
			}
			w := cmd.OutOrStdout()
			if _, err := w.Write(raw); err != nil {
				return err
			}
			if len(raw) > 0 && raw[len(raw)-1] != '\n' {
				_, err := io.WriteString(w, "\n")
				return err
			}
			return nil
		},
	}
}

func unknownType(name string) error {
	return exitf(ExitUsage, "unknown message type %q (see kurer schema list)", name)
}

type schemaValidateOptions struct {
	files  string
	output string
}

func newSchemaValidateCommand() *cobra.Command {
	var o schemaValidateOptions
	cmd := &cobra.Command{
		Use:   "validate TYPE FILE",
		Short: "Check a melding.json (and its payload files) against a message type",
		Long: `Check FILE, a business message (melding.json), against TYPE's schema and the
checks after it. The payload files are the files under --files (default: the
folder FILE is in, without FILE itself), named by their path relative to it
with / separators, as they would be in the envelope; the document list must
name exactly those files.

Prints one line per error, "PATH: message [code]", PATH a JSON pointer into
FILE. Exit 0: valid. Exit 1: invalid. Exit 2: unknown type or unreadable
file.`,
		Example: `  kurer schema validate no.kurer.barnevern.sak.overforing.v1 examples/cases/sak-overforing/melding.json`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSchemaValidate(cmd.OutOrStdout(), o, args[0], args[1])
		},
	}
	cmd.Flags().StringVar(&o.files, "files", "", "folder of the payload files (default: FILE's folder)")
	cmd.Flags().StringVar(&o.output, "output", "text", "output format: text or json")
	return cmd
}

type schemaValidateResult struct {
	Type   string               `json:"type"`
	File   string               `json:"file"`
	Files  []string             `json:"files"`
	Valid  bool                 `json:"valid"`
	Errors []schemas.FieldError `json:"errors"`
}

func runSchemaValidate(w io.Writer, o schemaValidateOptions, typeName, file string) error {
	if o.output != "text" && o.output != "json" {
		return exitf(ExitUsage, "--output %q: want text or json", o.output)
	}
	reg := schemas.Default()
	if _, ok := reg.Lookup(typeName); !ok {
		return unknownType(typeName)
	}
	melding, err := readLimited(file, schemas.MaxMeldingSize+1)
	if err != nil {
		return exitf(ExitUsage, "read %s: %v", file, err)
	}
	dir := o.files
	if dir == "" {
		dir = filepath.Dir(file)
	}
	files, err := payloadFileNames(dir, file)
	if err != nil {
		return exitf(ExitUsage, "--files %s: %v", dir, err)
	}
	res := schemaValidateResult{Type: typeName, File: file, Files: files, Valid: true, Errors: []schemas.FieldError{}}
	if err := reg.Validate(typeName, melding, files); err != nil {
		var ve *schemas.ValidationError
		if !errors.As(err, &ve) {
			return err
		}
		res.Valid = false
		res.Errors = ve.Errors
	}
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else if res.Valid {
		fmt.Fprintf(w, "%s: valid %s (%d payload file(s))\n", file, typeName, len(files))
	} else {
		for _, fe := range res.Errors {
			fmt.Fprintf(w, "%s [%s]\n", fe.String(), fe.Code)
		}
	}
	if !res.Valid {
		return exitf(ExitError, "%s: %d error(s) against %s", file, len(res.Errors), typeName)
	}
	return nil
}

// readLimited reads at most n bytes of a regular file.
func readLimited(name string, n int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	return io.ReadAll(io.LimitReader(f, n))
}

// payloadFileNames lists the files under dir as envelope names (relative,
// / separated), without the message file itself and without a top-level
// melding.json.
func payloadFileNames(dir, meldingFile string) ([]string, error) {
	self, err := filepath.Abs(meldingFile)
	if err != nil {
		return nil, err
	}
	var names []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if abs, err := filepath.Abs(p); err == nil && abs == self {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == schemas.MeldingFile {
			return nil
		}
		if len(names) >= maxValidateFiles {
			return fmt.Errorf("more than %d files", maxValidateFiles)
		}
		names = append(names, rel)
		return nil
	})
	return names, err
}

func newSchemaExportCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "export DIR",
		Example: `  kurer schema export /tmp/kurer-schemas   # types file and JSON Schemas, for other languages`,
		Short:   "Write the types file and all JSON Schemas into DIR",
		Long: `Write types.json and jsonschema/*.json (every type's schema and the shared
felles.schema.json) into DIR, for validation with other tools. Existing files
of the same name are overwritten.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := exportSchemas(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d file(s) to %s\n", n, args[0])
			return nil
		},
	}
}

func exportSchemas(dst string) (int, error) {
	src := schemas.Files()
	n := 0
	err := fs.WalkDir(src, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		out := filepath.Join(dst, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := fs.ReadFile(src, p)
		if err != nil {
			return err
		}
		n++
		return os.WriteFile(out, b, 0o644)
	})
	if err != nil {
		return n, fmt.Errorf("export schemas: %w", err)
	}
	return n, nil
}
