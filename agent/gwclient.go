package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"strings"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/client"
	"github.com/kurer/kurer/internal/pki"
)

// newGatewayClient builds the gateway client from cfg, signing client
// assertions with key. tlsConf, when set (tests), replaces the roots read
// from cfg.Gateway.CAFile.
func newGatewayClient(cfg Config, key Key, tlsConf *tls.Config) (Gateway, error) {
	if tlsConf == nil && cfg.Gateway.CAFile != "" {
		roots, err := pki.LoadCerts(cfg.Gateway.CAFile)
		if err != nil {
			return nil, fmt.Errorf("gateway.ca_file: %w", err)
		}
		// The dev CA's key is public: trusting it outside dev mode would let
		// anyone impersonate the gateway.
		pool, err := pki.TrustPool(roots, cfg.Dev)
		if err != nil {
			return nil, fmt.Errorf("gateway.ca_file: %w", err)
		}
		tlsConf = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	const pollInline = 64 << 10
	c, err := client.New(client.Config{
		BaseURL:   cfg.Gateway.URL,
		AccountID: cfg.Account,
		Signer:    key.Signer,
		Cert:      key.Cert,
		TLS:       tlsConf,
		Audience:  cfg.Gateway.Audience,
		// Small envelopes come with the poll answer: one round trip less
		// per case (checked against the routing digest like a download).
		PollInline: pollInline,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway client: %w", err)
	}
	return gatewayClient{c}, nil
}

// gatewayClient adapts *client.Client to the agent's Gateway interface.
type gatewayClient struct{ *client.Client }

var _ Gateway = gatewayClient{}

func (g gatewayClient) Submit(ctx context.Context, r api.Routing, body *os.File) (api.SubmitResponse, error) {
	return g.Client.Submit(ctx, r, body)
}

func (g gatewayClient) Reject(ctx context.Context, id string, r api.RejectRequest) error {
	return g.Client.Reject(ctx, id, r.Reason, r.Detail)
}

// Find accepts the agent's "municipality:NNNN" / "org:NNNNNNNNN" form (and the
// bare digits) and asks the gateway catalog.
func (g gatewayClient) Find(ctx context.Context, query, msgType string) (api.Account, error) {
	if _, v, ok := strings.Cut(query, ":"); ok {
		query = v
	}
	return g.Client.Find(ctx, query, msgType)
}
