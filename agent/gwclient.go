package agent

import (
	"crypto/tls"
	"errors"
)

// newGatewayClient builds the gateway client from cfg.
func newGatewayClient(cfg Config, key Key, tlsConf *tls.Config) (Gateway, error) {
	return nil, errors.New("gateway client not available yet")
}
