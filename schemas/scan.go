package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// preScan applies the limits to untrusted melding bytes before a value is
// built: size, UTF-8, one JSON value, nesting depth and duplicate member
// names (which different parsers resolve differently). It streams tokens, so
// its memory is bounded by the input size and MaxDepth.
func preScan(b []byte) (FieldError, bool) {
	if len(b) > MaxMeldingSize {
		return FieldError{Code: CodeTooLarge, Message: "melding.json is larger than " + strconv.Itoa(MaxMeldingSize) + " bytes"}, false
	}
	if !utf8.Valid(b) {
		return FieldError{Code: CodeEncoding, Message: "not valid UTF-8"}, false
	}
	type frame struct {
		obj     bool
		keyNext bool
		lastKey string
		idx     int
		ptr     string
		keys    map[string]struct{}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var stack []*frame
	values := 0
	syntax := FieldError{Code: CodeSyntax, Message: "not valid JSON"}
	// value is called when a value starts in the current container.
	childPtr := func() string {
		top := stack[len(stack)-1]
		if top.obj {
			return top.ptr + "/" + escapePointer(top.lastKey)
		}
		return top.ptr + "/" + strconv.Itoa(top.idx)
	}
	afterValue := func() {
		if len(stack) == 0 {
			values++
			return
		}
		top := stack[len(stack)-1]
		if top.obj {
			top.keyNext = true
		} else {
			top.idx++
		}
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return syntax, false
		}
		if len(stack) == 0 && values > 0 {
			return FieldError{Code: CodeSyntax, Message: "more than one JSON value"}, false
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if len(stack) >= MaxDepth {
					return FieldError{Code: CodeTooDeep, Message: "nested deeper than " + strconv.Itoa(MaxDepth) + " levels"}, false
				}
				ptr := ""
				if len(stack) > 0 {
					ptr = childPtr()
				}
				f := &frame{obj: v == '{', keyNext: v == '{', ptr: ptr}
				if f.obj {
					f.keys = map[string]struct{}{}
				}
				stack = append(stack, f)
			default: // '}' or ']'
				stack = stack[:len(stack)-1]
				afterValue()
			}
		case string:
			if len(stack) > 0 {
				top := stack[len(stack)-1]
				if top.obj && top.keyNext {
					if _, dup := top.keys[v]; dup {
						return FieldError{Path: top.ptr + "/" + escapePointer(v), Code: CodeDuplicateKey, Message: "member name appears more than once"}, false
					}
					top.keys[v] = struct{}{}
					top.lastKey = v
					top.keyNext = false
					continue
				}
			}
			afterValue()
		default:
			afterValue()
		}
	}
	if values != 1 || len(stack) != 0 {
		return syntax, false
	}
	return FieldError{}, true
}

// escapePointer escapes one JSON pointer reference token (RFC 6901).
func escapePointer(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(escapePointer(t))
	}
	return b.String()
}
