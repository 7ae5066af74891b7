package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kurer/kurer/agent/localapi"
)

type statusOptions struct {
	agent     agentFlags
	output    string
	watch     bool
	direction string
	state     string
	limit     int
}

func newStatusCommand() *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status [ID]",
		Short: "Show a message's states and receipts, or watch all messages",
		Long: `Show what the local agent knows about messages.

With an ID: the message's state history with times, and every receipt
(gateway notices and the receiver's signed application receipts) with its
kind, issuer and whether its signature was verified.

Without an ID: a table of the latest messages (outgoing by default).

With --watch: a live table of the messages and their states, updated as the
agent reports changes, until Ctrl-C. On a terminal the table is redrawn;
otherwise one line is printed per change (with --output json, one JSON
object per line).

Outgoing states: queued -> sent -> delivered -> received -> processed, or
rejected | expired | failed with a reason code (docs/states.md).`,
		Example: `  # One message: history and receipts
  kurer status 0e6f3a52-8b1b-4f57-9a55-2b7b9d1c3b11 --agent http://127.0.0.1:7411

  # The same as JSON
  kurer status 0e6f3a52-8b1b-4f57-9a55-2b7b9d1c3b11 --output json

  # The 20 latest outgoing messages, then only the failed ones
  kurer status --limit 20
  kurer status --state failed

  # Received messages
  kurer status --direction in

  # Live table for operators (Ctrl-C to stop)
  kurer status --watch`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, args)
		},
	}
	o.agent.register(cmd)
	f := cmd.Flags()
	f.BoolVarP(&o.watch, "watch", "w", false, "keep running and show state changes live")
	f.StringVar(&o.direction, "direction", localapi.DirectionOut, "without ID: out (sent by this agent) or in (received)")
	f.StringVar(&o.state, "state", "", "without ID: only messages in this state")
	f.IntVar(&o.limit, "limit", 50, "without ID: at most this many messages")
	registerOutput(cmd, &o.output)
	return cmd
}

func (o *statusOptions) run(cmd *cobra.Command, args []string) error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	if o.direction != localapi.DirectionOut && o.direction != localapi.DirectionIn {
		return exitf(ExitUsage, "--direction must be out or in")
	}
	if len(args) == 1 && o.watch {
		return exitf(ExitUsage, "--watch follows all messages; give no ID (use kurer send --wait to follow one)")
	}
	c, err := o.agent.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	switch {
	case len(args) == 1:
		d, err := c.Message(ctx, args[0])
		if err != nil {
			return agentError("status", err)
		}
		if o.output == outputJSON {
			return writeJSON(out, d)
		}
		return printDetail(out, d)
	case o.watch:
		return o.runWatch(ctx, c, out)
	default:
		list, err := c.List(ctx, o.direction, o.state, o.limit)
		if err != nil {
			return agentError("status", err)
		}
		if o.output == outputJSON {
			if list == nil {
				list = []localapi.MessageSummary{}
			}
			return writeJSON(out, list)
		}
		return printTable(out, list)
	}
}

// timeFmt is how times are shown in tables: local time with milliseconds.
const timeFmt = "2006-01-02 15:04:05.000"

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(timeFmt)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

// printDetail writes one message's detail as text.
func printDetail(w io.Writer, d localapi.MessageDetail) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("id", d.ID)
	row("direction", d.Direction)
	row("type", d.Type)
	row("from", d.From)
	row("to", d.To)
	row("state", d.State)
	if d.Size > 0 {
		row("size", fmt.Sprintf("%d bytes", d.Size))
	}
	row("conversation", d.Conversation)
	row("in reply to", d.InReplyTo)
	row("created", fmtTime(d.Created))
	if !d.Expires.IsZero() {
		row("expires", fmtTime(d.Expires))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nhistory:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIME\tSTATE\tSTEP\tREASON")
	var prev time.Time
	for i, h := range d.History {
		step := ""
		if i > 0 {
			step = fmt.Sprintf("+%d ms", h.At.Sub(prev).Milliseconds())
		}
		prev = h.At
		reason := h.Reason
		if h.Detail != "" {
			reason = strings.TrimSpace(reason + " " + h.Detail)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", fmtTime(h.At), h.State, step, reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nreceipts:")
	if len(d.Receipts) == 0 {
		fmt.Fprintln(w, "  (none yet)")
	} else {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  TIME\tKIND\tISSUER\tVERIFIED\tREASON")
		for _, r := range d.Receipts {
			reason := r.Reason
			if r.Detail != "" {
				reason = strings.TrimSpace(reason + " " + r.Detail)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", fmtTime(r.At), r.Kind, r.Issuer, yesNo(r.Verified), reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(d.Files) > 0 {
		fmt.Fprintln(w, "\nfiles:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tSIZE\tSHA-256")
		for _, f := range d.Files {
			fmt.Fprintf(tw, "  %s\t%d\t%s\n", f.Name, f.Size, f.SHA256)
		}
		return tw.Flush()
	}
	return nil
}

// printTable writes message summaries as a table.
func printTable(w io.Writer, list []localapi.MessageSummary) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDIR\tSTATE\tTYPE\tTO/FROM\tUPDATED")
	for _, m := range list {
		peer := m.To
		if m.Direction == localapi.DirectionIn {
			peer = m.From
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Direction, m.State, m.Type, peer, fmtTime(m.Updated))
	}
	return tw.Flush()
}

// watchLine is one change as printed by status --watch --output json.
type watchLine struct {
	Event   localapi.Event           `json:"event"`
	Message *localapi.MessageSummary `json:"message,omitempty"`
}

// runWatch follows the agent's events until ctx ends (Ctrl-C), which is a
// normal end.
func (o *statusOptions) runWatch(ctx context.Context, c *localapi.Client, out io.Writer) error {
	redraw := o.output == outputText && isTerminal(out)
	// The cursor first, then the listing: a change between the two is seen
	// twice (harmless), never missed.
	cursor, err := c.LatestEvent(ctx)
	if err != nil {
		return watchEnd(ctx, err)
	}
	list, err := c.List(ctx, o.direction, o.state, o.limit)
	if err != nil {
		return watchEnd(ctx, err)
	}
	rows := map[string]*localapi.MessageSummary{}
	for i := range list {
		rows[list[i].ID] = &list[i]
	}
	render := func() {
		all := make([]localapi.MessageSummary, 0, len(rows))
		for _, m := range rows {
			all = append(all, *m)
		}
		sort.Slice(all, func(i, j int) bool {
			if !all[i].Updated.Equal(all[j].Updated) {
				return all[i].Updated.After(all[j].Updated)
			}
			return all[i].ID < all[j].ID
		})
		if len(all) > o.limit && o.limit > 0 {
			all = all[:o.limit]
		}
		fmt.Fprint(out, "\x1b[H\x1b[2J")
		fmt.Fprintf(out, "kurer status --watch  %s  (%d messages, Ctrl-C to stop)\n\n", time.Now().Format("15:04:05"), len(all))
		_ = printTable(out, all)
	}
	if redraw {
		render()
	} else if o.output == outputText {
		fmt.Fprintf(out, "watching %s messages (%d known)\n", o.direction, len(rows))
	}
	for {
		ev, err := c.Events(ctx, cursor, eventsWait)
		if err != nil {
			return watchEnd(ctx, err)
		}
		if ev.Next > cursor {
			cursor = ev.Next
		}
		for _, e := range ev.Events {
			if e.Direction != "" && e.Direction != o.direction {
				continue
			}
			if o.state != "" && e.State != o.state {
				continue
			}
			m, ok := rows[e.ID]
			if !ok {
				d, err := c.Message(ctx, e.ID)
				if err != nil {
					return watchEnd(ctx, err)
				}
				s := d.MessageSummary
				m = &s
				rows[e.ID] = m
			}
			m.State, m.Updated = e.State, e.At
			switch {
			case o.output == outputJSON:
				if err := writeJSONLine(out, watchLine{Event: e, Message: m}); err != nil {
					return err
				}
			case !redraw:
				line := fmt.Sprintf("%s  %s  %-9s %s %s", fmtTime(e.At), e.ID, e.State, m.Type, m.To)
				if e.Reason != "" {
					line += "  " + e.Reason
				}
				fmt.Fprintln(out, line)
			}
		}
		if redraw && len(ev.Events) > 0 {
			render()
		}
	}
}

// watchEnd turns the end of a watch into its result: Ctrl-C is success.
func watchEnd(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return agentError("watch", err)
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
