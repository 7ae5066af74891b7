package schemas

import (
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// formatError is returned by the custom formats so that the FieldError gets
// its own code (checksum, implausible_date) rather than "format".
type formatError struct {
	code string
	msg  string
}

func (e *formatError) Error() string { return e.msg }

// validateFodselsnummerFormat is the "fodselsnummer" format. Strings that
// are not 11 digits are left to the schema's pattern.
func validateFodselsnummerFormat(v any) error {
	s, ok := v.(string)
	if !ok {
		return nil
	}
	switch checkFodselsnummer(s) {
	case CodeChecksum:
		return &formatError{CodeChecksum, "the control digits of the fødselsnummer or D-number are wrong (mod 11)"}
	case CodeImplausibleDate:
		return &formatError{CodeImplausibleDate, "the date part of the fødselsnummer or D-number is not a valid date"}
	}
	return nil
}

// validateOrgnrFormat is the "orgnr" format.
func validateOrgnrFormat(v any) error {
	s, ok := v.(string)
	if !ok {
		return nil
	}
	if checkOrgNumber(s) == CodeChecksum {
		return &formatError{CodeChecksum, "the control digit of the organisation number is wrong (mod 11)"}
	}
	return nil
}

// flatten turns the validator's error tree into FieldErrors. Containers
// (allOf, $ref, if/then) are descended; anyOf and oneOf become one error,
// since the reasons each alternative failed mislead more than they help.
// Messages are written here and never include the instance's values.
func flatten(e *jsonschema.ValidationError, out []FieldError) []FieldError {
	loc := pointer(e.InstanceLocation)
	switch k := e.ErrorKind.(type) {
	case *kind.AnyOf:
		return append(out, FieldError{loc, CodeAnyOf, "matches none of the allowed alternatives"})
	case *kind.OneOf:
		if k.Subschemas == nil {
			return append(out, FieldError{loc, CodeOneOf, "matches none of the allowed alternatives"})
		}
		return append(out, FieldError{loc, CodeOneOf, "matches more than one of the alternatives"})
	}
	if len(e.Causes) > 0 {
		for _, c := range e.Causes {
			out = flatten(c, out)
		}
		return out
	}
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		for _, m := range k.Missing {
			out = append(out, FieldError{loc + "/" + escapePointer(m), CodeRequired, "is required"})
		}
	case *kind.DependentRequired:
		for _, m := range k.Missing {
			out = append(out, FieldError{loc + "/" + escapePointer(m), CodeRequired, "is required when " + k.Prop + " is present"})
		}
	case *kind.AdditionalProperties:
		for _, p := range k.Properties {
			out = append(out, FieldError{loc + "/" + escapePointer(p), CodeAdditionalProperty, "is not a known field here"})
		}
	case *kind.FalseSchema:
		out = append(out, FieldError{loc, CodeNotAllowed, "is not allowed here"})
	case *kind.Type:
		out = append(out, FieldError{loc, CodeType, fmt.Sprintf("must be %s, not %s", strings.Join(k.Want, " or "), k.Got)})
	case *kind.Enum:
		out = append(out, FieldError{loc, CodeEnum, "must be one of " + joinValues(k.Want)})
	case *kind.Const:
		out = append(out, FieldError{loc, CodeConst, "must be " + joinValues([]any{k.Want})})
	case *kind.Pattern:
		out = append(out, FieldError{loc, CodePattern, "does not match the pattern " + k.Want})
	case *kind.Format:
		var fe *formatError
		if errors.As(k.Err, &fe) {
			out = append(out, FieldError{loc, fe.code, fe.msg})
		} else {
			out = append(out, FieldError{loc, CodeFormat, "is not a valid " + k.Want})
		}
	case *kind.MinLength:
		out = append(out, FieldError{loc, CodeMinLength, "must be at least " + plural(k.Want, "character") + " long"})
	case *kind.MaxLength:
		out = append(out, FieldError{loc, CodeMaxLength, "must be at most " + plural(k.Want, "character") + " long"})
	case *kind.MinItems:
		out = append(out, FieldError{loc, CodeMinItems, "must have at least " + plural(k.Want, "item")})
	case *kind.MaxItems:
		out = append(out, FieldError{loc, CodeMaxItems, "must have at most " + plural(k.Want, "item")})
	case *kind.UniqueItems:
		out = append(out, FieldError{loc, CodeUniqueItems, fmt.Sprintf("items %d and %d are equal", k.Duplicates[0], k.Duplicates[1])})
	case *kind.Minimum:
		out = append(out, FieldError{loc, CodeMinimum, "must be at least " + k.Want.RatString()})
	case *kind.Maximum:
		out = append(out, FieldError{loc, CodeMaximum, "must be at most " + k.Want.RatString()})
	case *kind.Not:
		out = append(out, FieldError{loc, CodeNot, "matches a form that is not allowed"})
	default:
		kw := "schema"
		if p := e.ErrorKind.KeywordPath(); len(p) > 0 {
			kw = strings.Join(p, "/")
		}
		out = append(out, FieldError{loc, CodeSchema, "does not satisfy the schema keyword " + kw})
	}
	return out
}

// joinValues formats schema values (never instance values) for messages.
func joinValues(vs []any) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		if s, ok := v.(string); ok {
			parts[i] = `"` + s + `"`
		} else {
			parts[i] = fmt.Sprint(v)
		}
	}
	return strings.Join(parts, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
