package cli

import (
	"os"
	"syscall"
	"time"
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

// processCPU is the CPU time (user + system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
