package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kurer/kurer/agent/localapi"
	"github.com/kurer/kurer/internal/durable"
	"github.com/kurer/kurer/internal/errs"
)

// Environment variables the agent-facing commands read (flags win).
const (
	envAgentURL   = "KURER_AGENT_URL"
	envAgentToken = "KURER_AGENT_TOKEN"
)

// maxMetadataSize caps the case JSON read from disk (the agent has its own
// limit; this one keeps a wrong --metadata from being read whole).
const maxMetadataSize = 16 << 20

// agentFlags are the connection flags shared by send and status.
type agentFlags struct {
	url       string
	tokenFile string
}

func (a *agentFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.url, "agent", "", "the agent's local API: http://127.0.0.1:PORT or unix:///path/agent.sock (default $"+envAgentURL+")")
	cmd.Flags().StringVar(&a.tokenFile, "token-file", "", "file holding the local API token (default: $"+envAgentToken+")")
}

// client builds the local API client from the flags and the environment.
func (a *agentFlags) client() (*localapi.Client, error) {
	u := a.url
	if u == "" {
		u = os.Getenv(envAgentURL)
	}
	if u == "" {
		return nil, exitf(ExitUsage, "no agent: give --agent URL or set %s", envAgentURL)
	}
	token := ""
	if a.tokenFile != "" {
		b, err := durable.ReadFile(a.tokenFile, 4096)
		if err != nil {
			return nil, exitf(ExitUsage, "token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return nil, exitf(ExitUsage, "token file %s is empty", a.tokenFile)
		}
	} else {
		token = strings.TrimSpace(os.Getenv(envAgentToken))
	}
	c, err := localapi.NewClient(u, token, localapi.WithUserAgent("kurer/"+Version))
	if err != nil {
		return nil, &ExitErr{Code: ExitUsage, Err: err}
	}
	return c, nil
}

// agentError maps a local API error to an exit code: an unreachable agent
// is ExitUnavailable, anything else ExitError. The message is the public
// code and detail (and the cause, which stays on this host).
func agentError(what string, err error) error {
	if err == nil {
		return nil
	}
	var ee *ExitErr
	if errors.As(err, &ee) {
		return err
	}
	if errs.CodeOf(err) == errs.Unavailable {
		return &ExitErr{Code: ExitUnavailable, Err: fmt.Errorf("%s: agent unavailable: %w", what, err)}
	}
	return &ExitErr{Code: ExitError, Err: fmt.Errorf("%s: %w", what, err)}
}

// Output formats.
const (
	outputText = "text"
	outputJSON = "json"
)

func registerOutput(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "output", "o", outputText, "output format: text or json")
}

func checkOutput(o string) error {
	if o != outputText && o != outputJSON {
		return exitf(ExitUsage, "--output must be text or json, not %q", o)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

var (
	reMunicipality = regexp.MustCompile(`^[0-9]{4}$`)
	reOrg          = regexp.MustCompile(`^[0-9]{9}$`)
	reUUID         = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// receiverAddress turns --to into the local API's receiver: a bare 4-digit
// number is a municipality, a bare 9-digit number an organisation; the
// prefixed forms and account UUIDs pass through.
func receiverAddress(to string) (string, error) {
	switch {
	case reMunicipality.MatchString(to):
		return "municipality:" + to, nil
	case reOrg.MatchString(to):
		return "org:" + to, nil
	case strings.HasPrefix(to, "municipality:") && reMunicipality.MatchString(strings.TrimPrefix(to, "municipality:")),
		strings.HasPrefix(to, "org:") && reOrg.MatchString(strings.TrimPrefix(to, "org:")),
		reUUID.MatchString(to):
		return strings.ToLower(to), nil
	}
	return "", exitf(ExitUsage, "--to %q: want a municipality number (0301), org:NNNNNNNNN or an account id (UUID)", to)
}

// payloadFile is a file found on disk to send.
type payloadFile struct {
	name string // name in the envelope, / separated
	path string
	size int64
}

// collectFiles expands the arguments into payload files: a plain file goes
// under its base name, a folder's regular files under their paths relative
// to the folder. skip (an absolute path) is left out: the metadata file
// when it lives in the case folder; a folder's top-level melding.json is
// left out too, since --metadata supersedes it. Hidden files and folders (".name") in a
// folder are skipped. Names must be unique.
func collectFiles(args []string, skip string) ([]payloadFile, error) {
	var out []payloadFile
	seen := map[string]string{}
	add := func(name, path string, size int64) error {
		if prev, dup := seen[name]; dup {
			return fmt.Errorf("two files would be named %q in the envelope: %s and %s", name, prev, path)
		}
		seen[name] = path
		out = append(out, payloadFile{name: name, path: path, size: size})
		return nil
	}
	for _, arg := range args {
		st, err := os.Stat(arg)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			if !st.Mode().IsRegular() {
				return nil, fmt.Errorf("%s is not a regular file", arg)
			}
			if err := add(filepath.Base(arg), arg, st.Size()); err != nil {
				return nil, err
			}
			continue
		}
		err = filepath.WalkDir(arg, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if path != arg && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				return nil
			}
			if abs, _ := filepath.Abs(path); abs == skip {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			if !info.Mode().IsRegular() {
				return fmt.Errorf("%s is not a regular file", path)
			}
			rel, err := filepath.Rel(arg, path)
			if err != nil {
				return err
			}
			if filepath.ToSlash(rel) == localapi.MetadataFile {
				// The folder's own business message: --metadata supersedes it.
				return nil
			}
			return add(filepath.ToSlash(rel), path, info.Size())
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

type sendOptions struct {
	agent    agentFlags
	to       string
	typ      string
	metadata string
	id       string
	conv     string
	replyTo  string
	expires  string
	wait     bool
	timeout  time.Duration
	output   string
	progress string
}

func newSendCommand() *cobra.Command {
	o := &sendOptions{}
	cmd := &cobra.Command{
		Use:   "send --to RECEIVER --type TYPE --metadata CASE.json FILES|FOLDER...",
		Short: "Send a case through the local agent",
		Long: `Send a case (the business message JSON and its documents) through the
local agent. The agent validates the JSON against the type's schema, seals
the envelope (signed by this account, encrypted to the receiver) and holds it
durably in its outbox before kurer prints the message id.

RECEIVER is a municipality number (0301), org:NNNNNNNNN (an organisation
number) or an account id (UUID); the agent resolves numbers through the
gateway catalog for the message type. A number that more than one account
answers to for the type is refused (ambiguous_receiver, nothing is sent):
give the account id the error names instead.

Files given one by one are sent under their base names; a folder's files
under their paths relative to the folder (hidden files skipped). If the
metadata file lies inside a folder being sent, it is not sent twice.

A progress bar is drawn while uploading when stdout is a terminal.

With --wait, kurer follows the message until it reaches a final state and
exits 0 only when the receiver has confirmed it (received or processed);
rejected, expired, failed or a timeout exit with code 5 and the reason.`,
		Example: `  # Send a case folder to Oslo (municipality 0301) and print the message id
  kurer send --agent http://127.0.0.1:7411 --token-file agent.token \
    --to 0301 --type no.kurer.barnevern.sak.overforing.v1 \
    --metadata case/sak.json case/

  # The same, waiting up to two minutes for Oslo's signed receipt
  KURER_AGENT_URL=http://127.0.0.1:7411 KURER_AGENT_TOKEN=$(cat agent.token) \
    kurer send --to 0301 --type no.kurer.barnevern.sak.overforing.v1 \
    --metadata case/sak.json --wait --timeout 2m case/

  # Machine-readable answer
  kurer send --to org:974760673 --type T --metadata m.json --output json report.pdf`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, args)
		},
	}
	o.agent.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.to, "to", "", "receiver: municipality number (0301), org:NNNNNNNNN or account id (required)")
	f.StringVar(&o.typ, "type", "", "message type, e.g. no.kurer.barnevern.sak.overforing.v1 (required; see kurer schema list)")
	f.StringVar(&o.metadata, "metadata", "", "the business message JSON file (required)")
	f.StringVar(&o.id, "id", "", "message id (UUID) to make a retried send idempotent (default: the agent picks one)")
	f.StringVar(&o.conv, "conversation", "", "conversation id (UUID) this message belongs to")
	f.StringVar(&o.replyTo, "in-reply-to", "", "id of the message this one answers")
	f.StringVar(&o.expires, "expires", "", "expiry as RFC 3339 time or a duration from now, e.g. 72h (default: the type's)")
	f.BoolVar(&o.wait, "wait", false, "follow the message until the receiver confirms it, is refused, or --timeout")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "with --wait: how long to wait for a final state")
	f.StringVar(&o.progress, "progress", "auto", "progress bar: auto (when stdout is a terminal), always or never")
	registerOutput(cmd, &o.output)
	_ = cmd.MarkFlagRequired("to")
	_ = cmd.MarkFlagRequired("type")
	_ = cmd.MarkFlagRequired("metadata")
	return cmd
}

// sendResult is the --output json answer of kurer send.
type sendResult struct {
	ID     string                  `json:"id"`
	State  string                  `json:"state"`
	Files  int                     `json:"files"`
	Bytes  int64                   `json:"bytes"`
	Detail *localapi.MessageDetail `json:"detail,omitempty"` // with --wait
}

func (o *sendOptions) run(cmd *cobra.Command, args []string) error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	to, err := receiverAddress(o.to)
	if err != nil {
		return err
	}
	var expires time.Time
	if o.expires != "" {
		if d, err := time.ParseDuration(o.expires); err == nil && d > 0 {
			expires = time.Now().Add(d)
		} else if t, err := time.Parse(time.RFC3339, o.expires); err == nil {
			expires = t
		} else {
			return exitf(ExitUsage, "--expires %q: want an RFC 3339 time or a positive duration", o.expires)
		}
	}
	if o.id != "" && !reUUID.MatchString(o.id) {
		return exitf(ExitUsage, "--id %q is not a UUID", o.id)
	}
	meta, err := durable.ReadFile(o.metadata, maxMetadataSize)
	if err != nil {
		return exitf(ExitUsage, "metadata: %w", err)
	}
	if !json.Valid(meta) {
		return exitf(ExitUsage, "metadata %s is not valid JSON", o.metadata)
	}
	metaAbs, _ := filepath.Abs(o.metadata)
	files, err := collectFiles(args, metaAbs)
	if err != nil {
		return exitf(ExitUsage, "files: %w", err)
	}
	c, err := o.agent.client()
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	showBar := o.progress == "always" || (o.progress == "auto" && o.output == outputText && isTerminal(out))
	if o.progress != "auto" && o.progress != "always" && o.progress != "never" {
		return exitf(ExitUsage, "--progress must be auto, always or never")
	}

	req := localapi.SendRequest{
		Type: o.typ, To: to, ID: o.id, Conversation: o.conv, InReplyTo: o.replyTo,
		Expires: expires, Metadata: meta,
	}
	var total int64
	for _, f := range files {
		path := f.path
		req.Files = append(req.Files, localapi.SendFile{
			Name: f.name, Size: f.size,
			Open: func() (io.ReadCloser, error) { return os.Open(path) },
		})
		total += f.size
	}
	var bar *progressbar.ProgressBar
	if showBar {
		bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(cmd.ErrOrStderr()),
			progressbar.OptionSetDescription(fmt.Sprintf("sending %d file(s)", len(files))),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(cmd.ErrOrStderr()) }),
		)
		req.Progress = func(sent, _ int64) { _ = bar.Set64(sent) }
	}
	ctx := cmd.Context()
	resp, err := c.Send(ctx, req)
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil {
		return agentError("send", err)
	}
	res := sendResult{ID: resp.ID, State: resp.State, Files: len(files), Bytes: total}
	if !o.wait {
		if o.output == outputJSON {
			return writeJSON(out, res)
		}
		fmt.Fprintln(out, resp.ID)
		return nil
	}
	if o.output == outputText {
		fmt.Fprintln(out, resp.ID)
	}
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	var onChange func(localapi.StateChange)
	if o.output == outputText {
		onChange = func(sc localapi.StateChange) {
			line := fmt.Sprintf("  %-9s %s", sc.State, sc.At.Local().Format("15:04:05.000"))
			if sc.Reason != "" {
				line += "  " + sc.Reason
			}
			fmt.Fprintln(out, line)
		}
	}
	d, err := followMessage(wctx, c, resp.ID, onChange)
	if d.ID != "" {
		res.State, res.Detail = d.State, &d
	}
	if o.output == outputJSON {
		if werr := writeJSON(out, res); werr != nil {
			return werr
		}
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return exitf(ExitNotDone, "message %s still %s after %s", resp.ID, d.State, o.timeout)
		}
		return agentError("wait", err)
	}
	return waitVerdict(d)
}

// waitVerdict is nil if d reached received or processed, else ExitNotDone
// with the state and its reason.
func waitVerdict(d localapi.MessageDetail) error {
	switch d.State {
	case localapi.StateReceived, localapi.StateProcessed:
		return nil
	}
	reason := ""
	for i := len(d.History) - 1; i >= 0; i-- {
		if d.History[i].State == d.State && d.History[i].Reason != "" {
			reason = d.History[i].Reason
			if d.History[i].Detail != "" {
				reason += " (" + d.History[i].Detail + ")"
			}
			break
		}
	}
	if reason == "" {
		for _, r := range d.Receipts {
			if r.Reason != "" {
				reason = r.Reason
			}
		}
	}
	if reason != "" {
		return exitf(ExitNotDone, "message %s %s: %s", d.ID, d.State, reason)
	}
	return exitf(ExitNotDone, "message %s %s", d.ID, d.State)
}

// finalState reports whether an outgoing state is terminal for a waiter:
// received and processed are success, rejected, expired, failed are the
// failure ends. (received may still move on to processed; a waiter stops
// at received.)
func finalState(s string) bool {
	switch s {
	case localapi.StateReceived, localapi.StateProcessed, localapi.StateRejected, localapi.StateExpired, localapi.StateFailed:
		return true
	}
	return false
}

// eventsWait is the long-poll wait of the followers.
const eventsWait = 25 * time.Second

// followMessage follows message id until it reaches a final state or ctx
// ends, calling onChange (if set) once for every new history step in order.
// It long-polls the agent's events and re-reads the message when one
// concerns it, so it never misses a step between polls. It returns the last
// detail read.
func followMessage(ctx context.Context, c *localapi.Client, id string, onChange func(localapi.StateChange)) (localapi.MessageDetail, error) {
	cursor, err := c.LatestEvent(ctx)
	if err != nil {
		return localapi.MessageDetail{}, err
	}
	shown := 0
	var last localapi.MessageDetail
	for {
		d, err := c.Message(ctx, id)
		if err != nil {
			return last, err
		}
		last = d
		if onChange != nil {
			for ; shown < len(d.History); shown++ {
				onChange(d.History[shown])
			}
		}
		if finalState(d.State) {
			return d, nil
		}
		// Wait until an event about this message arrives (or the wait
		// ends), then read it again.
		for {
			wait := eventsWait
			if dl, ok := ctx.Deadline(); ok {
				if rem := time.Until(dl); rem < wait {
					wait = max(rem, time.Millisecond)
				}
			}
			ev, err := c.Events(ctx, cursor, wait)
			if err != nil {
				if ctx.Err() != nil {
					return last, ctx.Err()
				}
				return last, err
			}
			if ev.Next > cursor {
				cursor = ev.Next
			}
			if len(ev.Events) == 0 || containsID(ev.Events, id) {
				break
			}
		}
	}
}

func containsID(evs []localapi.Event, id string) bool {
	for _, e := range evs {
		if e.ID == id {
			return true
		}
	}
	return false
}
