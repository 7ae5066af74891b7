//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package audit

import "os"

// lockFile is a no-op where flock is not available; one process per log is
// then the operator's responsibility.
func lockFile(*os.File) error { return nil }
