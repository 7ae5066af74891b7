package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kurer/kurer/internal/pki"
)

type benchEnvelopeOptions struct {
	size    string
	json    bool
	dir     string
	runs    int
	profile string
	kurer   string
	openssl string
}

// newBenchEnvelopeCommand builds `kurer bench envelope`.
func newBenchEnvelopeCommand() *cobra.Command {
	var o benchEnvelopeOptions
	cmd := &cobra.Command{
		Use: "envelope [--size 1GiB] [--json]",
		Example: `  kurer bench envelope --size 100MiB
  kurer bench envelope --size 1GiB --runs 3 --json`,
		Short: "Compare sealing and opening an envelope with openssl cms on the same bytes",
		Long: `Generate a payload of --size, then time, in child processes, kurer's seal
and open (kurer envelope seal/open) against openssl cms -encrypt -stream and
-decrypt on the same bytes, and print both sides' wall time, the ratio and
each side's peak RSS (ru_maxrss of the child). kurer does more work than
openssl here (ZIP container, SHA-256 of every file, a CMS signature, on open
the spool, tag, signature and digest checks); the ratio shows what that costs.

Targets (issue 2): ratio <= 1.25 at 100 MiB and 1 GiB, peak RSS <= 64 MiB.
Needs openssl in PATH and disk for about 4x --size in --dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchEnvelope(cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.size, "size", "100MiB", "payload size: bytes or a number with KiB, MiB or GiB")
	f.BoolVar(&o.json, "json", false, "print the figures as JSON")
	f.StringVar(&o.dir, "dir", "", "directory for the payload and envelopes (default: the system temp dir); removed afterwards")
	f.IntVar(&o.runs, "runs", 1, "runs per side; the fastest run is reported")
	f.StringVar(&o.profile, "profile", "gcm", "envelope profile: gcm (vs openssl -aes-256-gcm) or fiks (vs -aes-256-cbc)")
	f.StringVar(&o.kurer, "kurer", "", "kurer binary to run as the child (default: this executable)")
	f.StringVar(&o.openssl, "openssl", "openssl", "openssl binary")
	return cmd
}

// parseSize reads "1GiB", "100MiB", "512KiB" or a plain byte count.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, KiB, MiB or GiB", s)
	}
	return n * mult, nil
}

// benchRun is one side's figures.
type benchRun struct {
	Seconds   float64 `json:"seconds"`
	MaxRSSKiB int64   `json:"max_rss_kib"`
}

type benchPair struct {
	Kurer   benchRun `json:"kurer"`
	OpenSSL benchRun `json:"openssl"`
	Ratio   float64  `json:"ratio"` // kurer time / openssl time
}

type benchEnvelopeResult struct {
	Date           string    `json:"date"`
	SizeBytes      int64     `json:"size_bytes"`
	Profile        string    `json:"profile"`
	CPUs           int       `json:"cpus"`
	CPUModel       string    `json:"cpu_model,omitempty"`
	GoVersion      string    `json:"go_version"`
	OpenSSLVersion string    `json:"openssl_version"`
	Runs           int       `json:"runs"`
	Seal           benchPair `json:"seal"`
	Open           benchPair `json:"open"`
	EnvelopeBytes  struct {
		Kurer   int64 `json:"kurer"`
		OpenSSL int64 `json:"openssl"`
	} `json:"envelope_bytes"`
	// RatioTargetApplies: the time target is set for 100 MiB and more; below
	// that, process start-up and the RSA operations dominate both sides.
	RatioTargetApplies bool `json:"ratio_target_applies"`
	RatioTargetMet     bool `json:"ratio_target_met"`
	RSSTargetMet       bool `json:"rss_target_met"`
}

const (
	benchRatioTarget = 1.25
	benchRSSTarget   = 64 << 10 // KiB
)

func runBenchEnvelope(w io.Writer, o benchEnvelopeOptions) error {
	size, err := parseSize(o.size)
	if err != nil {
		return &ExitErr{Code: ExitUsage, Err: err}
	}
	if o.runs < 1 {
		return exitf(ExitUsage, "--runs must be at least 1")
	}
	cipherFlag := map[string]string{"gcm": "-aes-256-gcm", "fiks": "-aes-256-cbc"}[o.profile]
	if cipherFlag == "" {
		return exitf(ExitUsage, "--profile %q: want gcm or fiks", o.profile)
	}
	osslPath, err := exec.LookPath(o.openssl)
	if err != nil {
		return exitf(ExitUsage, "openssl not found (%v): the benchmark compares against it", err)
	}
	kurer := o.kurer
	if kurer == "" {
		if kurer, err = os.Executable(); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	dir, err := os.MkdirTemp(o.dir, "kurer-bench-envelope-*")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)

	res := benchEnvelopeResult{
		Date: time.Now().UTC().Format(time.RFC3339), SizeBytes: size, Profile: o.profile,
		CPUs: runtime.NumCPU(), CPUModel: cpuModel(), GoVersion: runtime.Version(), Runs: o.runs,
	}
	if v, err := exec.Command(osslPath, "version").Output(); err == nil {
		res.OpenSSLVersion = strings.TrimSpace(string(v))
	}
	files, err := benchPKI(dir)
	if err != nil {
		return err
	}
	payload := filepath.Join(dir, "payload.bin")
	if err := writePayload(payload, size); err != nil {
		return err
	}
	oursEnv, osslEnv := filepath.Join(dir, "kurer.kenv"), filepath.Join(dir, "openssl.der")
	oursOut, osslOut := filepath.Join(dir, "kurer-out"), filepath.Join(dir, "openssl.out")

	sealArgs := []string{"envelope", "seal", "--type", "no.kurer.bench.v1", "--from", "bench-sender", "--to", "bench-receiver",
		"--sign-cert", files["sender.pem"], "--sign-key", files["sender.key"], "--to-cert", files["receiver.pem"],
		"--profile", o.profile, "--out", oursEnv, payload}
	openArgs := []string{"envelope", "open", "--cert", files["receiver.pem"], "--key", files["receiver.key"],
		"--trust", files["ca.pem"], "--dev", "--out", oursOut, oursEnv}
	encArgs := []string{"cms", "-encrypt", "-binary", "-stream", cipherFlag, "-in", payload, "-outform", "DER", "-out", osslEnv,
		"-recip", files["receiver.pem"], "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"}
	decArgs := []string{"cms", "-decrypt", "-binary", "-stream", "-inform", "DER", "-in", osslEnv,
		"-recip", files["receiver.pem"], "-inkey", files["receiver.key"], "-out", osslOut}

	for i := 0; i < o.runs; i++ {
		if err := best(&res.Seal.Kurer, kurer, sealArgs, nil); err != nil {
			return err
		}
		if err := best(&res.Seal.OpenSSL, osslPath, encArgs, nil); err != nil {
			return err
		}
		if err := best(&res.Open.Kurer, kurer, openArgs, func() error { return os.RemoveAll(oursOut) }); err != nil {
			return err
		}
		if err := best(&res.Open.OpenSSL, osslPath, decArgs, func() error { return os.RemoveAll(osslOut) }); err != nil {
			return err
		}
	}
	// both sides must have produced the payload again
	for _, p := range []string{filepath.Join(oursOut, "payload.bin"), osslOut} {
		if st, err := os.Stat(p); err != nil || st.Size() != size {
			return fmt.Errorf("bench: %s does not hold the payload (%v)", p, err)
		}
	}
	if st, err := os.Stat(oursEnv); err == nil {
		res.EnvelopeBytes.Kurer = st.Size()
	}
	if st, err := os.Stat(osslEnv); err == nil {
		res.EnvelopeBytes.OpenSSL = st.Size()
	}
	res.Seal.Ratio = res.Seal.Kurer.Seconds / res.Seal.OpenSSL.Seconds
	res.Open.Ratio = res.Open.Kurer.Seconds / res.Open.OpenSSL.Seconds
	res.RatioTargetApplies = size >= 100<<20
	res.RatioTargetMet = res.Seal.Ratio <= benchRatioTarget && res.Open.Ratio <= benchRatioTarget
	res.RSSTargetMet = res.Seal.Kurer.MaxRSSKiB <= benchRSSTarget && res.Open.Kurer.MaxRSSKiB <= benchRSSTarget

	if o.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(w, "envelope benchmark: %s payload, profile %s, %d CPUs (%s), %s, %s, best of %d\n",
		humanBytes(size), o.profile, res.CPUs, res.CPUModel, res.OpenSSLVersion, res.Date, o.runs)
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\tkurer\topenssl\tratio\t\n")
	for _, r := range []struct {
		name string
		p    benchPair
	}{{"seal", res.Seal}, {"open", res.Open}} {
		fmt.Fprintf(tw, "%s time\t%.3f s\t%.3f s\t%.2f\t\n", r.name, r.p.Kurer.Seconds, r.p.OpenSSL.Seconds, r.p.Ratio)
		fmt.Fprintf(tw, "%s peak RSS\t%.1f MiB\t%.1f MiB\t\t\n", r.name, float64(r.p.Kurer.MaxRSSKiB)/1024, float64(r.p.OpenSSL.MaxRSSKiB)/1024)
	}
	fmt.Fprintf(tw, "envelope size\t%d\t%d\t\t\n", res.EnvelopeBytes.Kurer, res.EnvelopeBytes.OpenSSL)
	if err := tw.Flush(); err != nil {
		return err
	}
	ratio := metWord(res.RatioTargetMet)
	if !res.RatioTargetApplies {
		ratio += " (no target below 100 MiB: process start-up and RSA dominate)"
	}
	fmt.Fprintf(w, "targets: time ratio <= %.2f: %s; kurer peak RSS <= 64 MiB: %s\n",
		benchRatioTarget, ratio, metWord(res.RSSTargetMet))
	return nil
}

func metWord(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// best runs name args once (after prep) and keeps the faster run in r and
// the larger peak RSS.
func best(r *benchRun, name string, args []string, prep func() error) error {
	if prep != nil {
		if err := prep(); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	// Start every run with no dirty pages from the previous one, so that
	// neither side pays for the other's write-back.
	syncFilesystems()
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	// Go starts children with vfork semantics, and Linux carries the
	// parent's RSS high-water mark into the child's ru_maxrss at exec. So
	// ru_maxrss is exact only when it exceeds our own high-water mark at the
	// start; below that, the child's own VmHWM, sampled every 2 ms from
	// /proc while it runs, is reported instead.
	floor := vmHWM("self")
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bench: %s: %w", filepath.Base(name), err)
	}
	sampled := make(chan int64, 1)
	stop := make(chan struct{})
	go func() {
		var peak int64
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		pid := strconv.Itoa(cmd.Process.Pid)
		for {
			if v := vmHWM(pid); v > peak {
				peak = v
			}
			select {
			case <-stop:
				sampled <- peak
				return
			case <-t.C:
			}
		}
	}()
	err := cmd.Wait()
	secs := time.Since(start).Seconds()
	close(stop)
	peak := <-sampled
	if err != nil {
		return fmt.Errorf("bench: %s %s: %v: %s", filepath.Base(name), args[0], err, strings.TrimSpace(stderr.String()))
	}
	rss := childMaxRSS(cmd.ProcessState)
	if rss <= floor {
		rss = peak
	}
	if r.Seconds == 0 || secs < r.Seconds {
		r.Seconds = secs
	}
	if rss > r.MaxRSSKiB {
		r.MaxRSSKiB = rss
	}
	return nil
}

// benchPKI writes a throw-away dev CA, a sender and a receiver (RSA-3072).
func benchPKI(dir string) (map[string]string, error) {
	ca, err := pki.NewDevCA(pki.ECDSAP256, pki.Options{})
	if err != nil {
		return nil, err
	}
	files := map[string]string{"ca.pem": filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(files["ca.pem"], pki.EncodeCertPEM(ca.Cert), 0o600); err != nil {
		return nil, err
	}
	for _, n := range []string{"sender", "receiver"} {
		cert, key, err := ca.Issue(pki.LeafRequest{CommonName: "bench " + n, KeyType: pki.RSA3072}, pki.Options{})
		if err != nil {
			return nil, err
		}
		kp, err := pki.EncodeKeyPEM(key)
		if err != nil {
			return nil, err
		}
		files[n+".pem"], files[n+".key"] = filepath.Join(dir, n+".pem"), filepath.Join(dir, n+".key")
		if err := os.WriteFile(files[n+".pem"], pki.EncodeCertPEM(cert), 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(files[n+".key"], kp, 0o600); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// writePayload writes size pseudo-random (incompressible) bytes.
func writePayload(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	var seed [32]byte
	rng := rand.NewChaCha8(seed)
	bw := bufio.NewWriterSize(f, 1<<20)
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := int64(len(buf))
		if left < n {
			n = left
		}
		rng.Read(buf[:n])
		if _, err := bw.Write(buf[:n]); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		left -= n
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return f.Close()
}

// vmHWM returns the peak resident set size in KiB of a process ("self" or
// a pid) from /proc, or 0 when it cannot be read (e.g. the process exited).
func vmHWM(pid string) int64 {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "model name") {
			if i := strings.IndexByte(line, ':'); i >= 0 {
				return strings.TrimSpace(line[i+1:])
			}
		}
	}
	return ""
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
