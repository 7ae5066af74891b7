package agent

import (
	"context"
	"os"
	"time"

	"github.com/kurer/kurer/gateway/api"
)

// Gateway is what the agent needs from the gateway; gateway/client.Client
// provides it (see newGatewayClient). Tests may wrap it to inject faults.
type Gateway interface {
	// Submit uploads the envelope in body (resuming a partial upload) with
	// the routing header r; a repeat with the same id and digest answers
	// the same.
	Submit(ctx context.Context, r api.Routing, body *os.File) (api.SubmitResponse, error)
	// Poll long-polls the agent's own mailbox.
	Poll(ctx context.Context, wait time.Duration, max int) ([]api.MailboxItem, error)
	// Download writes the envelope of message id into dst, resuming from
	// dst's current size.
	Download(ctx context.Context, id string, dst *os.File) error
	// Ack confirms a mailbox item as durably taken.
	Ack(ctx context.Context, id string) error
	// AckMany acks up to api.MaxAckBatch items in one request and returns
	// the ids that were not acked, each with its error.
	AckMany(ctx context.Context, ids []string) (map[string]error, error)
	// Reject refuses a mailbox item with a reason code.
	Reject(ctx context.Context, id string, r api.RejectRequest) error
	// Lookup returns the catalog entry of an account.
	Lookup(ctx context.Context, accountID string) (api.Account, error)
	// Find resolves "municipality:NNNN" or "org:NNNNNNNNN" with a message
	// type to the account that receives it.
	Find(ctx context.Context, query, msgType string) (api.Account, error)
	// VerifyNotice verifies a gateway-signed JWS notice and returns its claims.
	VerifyNotice(jws string) (api.NoticeClaims, error)
}
