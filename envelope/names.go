package envelope

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// CleanName NFC-normalises a container name and checks it is safe: relative,
// '/' separated, no empty, "." or ".." segments, no backslash, no control
// characters, valid UTF-8, at most maxLen bytes. It returns the NFC form.
func CleanName(name string, maxLen int) (string, error) {
	if !utf8.ValidString(name) {
		return "", fail(ReasonNames, "file name is not valid UTF-8")
	}
	n := norm.NFC.String(name)
	if n == "" {
		return "", fail(ReasonNames, "empty file name")
	}
	if maxLen > 0 && len(n) > maxLen {
		return "", fail(ReasonNames, "file name longer than %d bytes", maxLen)
	}
	if strings.HasPrefix(n, "/") {
		return "", fail(ReasonNames, "absolute file name %q", n)
	}
	if strings.ContainsRune(n, '\\') {
		return "", fail(ReasonNames, "backslash in file name %q", n)
	}
	if len(n) >= 2 && n[1] == ':' {
		return "", fail(ReasonNames, "drive letter in file name %q", n)
	}
	for _, r := range n {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return "", fail(ReasonNames, "control character in file name %q", n)
		}
	}
	for _, seg := range strings.Split(n, "/") {
		switch seg {
		case "":
			return "", fail(ReasonNames, "empty path segment in file name %q", n)
		case ".", "..":
			return "", fail(ReasonNames, "dot segment in file name %q", n)
		}
	}
	return n, nil
}

// reservedName reports whether a payload may not use name.
func reservedName(n string) bool {
	l := strings.ToLower(n)
	return l == mimetypeName || l == "meta-inf" || strings.HasPrefix(l, "meta-inf/")
}

// nameSet detects duplicates after NFC, and files that are also directories
// of other files ("a" and "a/b"), which cannot both be extracted.
type nameSet struct {
	files map[string]bool
	dirs  map[string]bool
}

func newNameSet() *nameSet { return &nameSet{files: map[string]bool{}, dirs: map[string]bool{}} }

func (s *nameSet) add(n string) error {
	k := strings.ToLower(n) // case-insensitive file systems (Windows, macOS) would merge these
	if s.files[k] || s.dirs[k] {
		return fail(ReasonNames, "duplicate file name %q", n)
	}
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			if s.files[k[:i]] {
				return fail(ReasonNames, "file name %q is also a directory", n)
			}
			s.dirs[k[:i]] = true
		}
	}
	s.files[k] = true
	return nil
}
