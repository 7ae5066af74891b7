package envelope

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// CleanName NFC-normalises a container name and checks it is safe: relative,
// '/' separated, no empty, "." or ".." segments, no backslash, no control
// characters, valid UTF-8, at most maxLen bytes, and writable on Windows too
// (none of <>:"|?*, no segment ending in a dot or space, no device names
// such as CON or LPT1). It returns the NFC form.
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
	if strings.ContainsAny(n, `<>:"|?*`) {
		return "", fail(ReasonNames, "character not allowed on Windows in file name %q", n)
	}
	for _, seg := range strings.Split(n, "/") {
		switch seg {
		case "":
			return "", fail(ReasonNames, "empty path segment in file name %q", n)
		case ".", "..":
			return "", fail(ReasonNames, "dot segment in file name %q", n)
		}
		if strings.HasSuffix(seg, ".") || strings.HasSuffix(seg, " ") {
			return "", fail(ReasonNames, "path segment ending in a dot or space in file name %q", n)
		}
		if windowsDevice(seg) {
			return "", fail(ReasonNames, "reserved Windows device name in file name %q", n)
		}
	}
	return n, nil
}

// windowsDevice reports whether seg is a reserved device name on Windows
// (CON, PRN, AUX, NUL, COM1-9, LPT1-9), with or without an extension.
// Agents may run on Windows, where writing such a file opens a device.
func windowsDevice(seg string) bool {
	base := strings.ToUpper(seg)
	if i := strings.IndexByte(base, '.'); i >= 0 {
		base = base[:i]
	}
	base = strings.TrimRight(base, " ")
	switch base {
	case "CON", "PRN", "AUX", "NUL":
		return true
	}
	if len(base) == 4 && (strings.HasPrefix(base, "COM") || strings.HasPrefix(base, "LPT")) && base[3] >= '1' && base[3] <= '9' {
		return true
	}
	return false
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
