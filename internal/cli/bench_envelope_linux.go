package cli

import (
	"os"
	"syscall"
)

// syncFilesystems flushes dirty pages so a run does not pay for the last one's write-back.
func syncFilesystems() { syscall.Sync() }

// childMaxRSS is the child's ru_maxrss in KiB (Linux reports KiB).
func childMaxRSS(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return int64(ru.Maxrss)
	}
	return 0
}
