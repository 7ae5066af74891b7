//go:build !linux

package cli

import (
	"os"
	"time"
)

// syncFilesystems is a no-op where sync(2) is not portable; figures are
// only published from Linux (docs/BENCHMARKS.md).
func syncFilesystems() {}

// childMaxRSS is not measured outside Linux (ru_maxrss units differ, /proc is absent).
func childMaxRSS(*os.ProcessState) int64 { return 0 }

// processCPU is not measured outside Linux.
func processCPU() time.Duration { return 0 }
