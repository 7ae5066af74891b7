package agenttest

import "github.com/kurer/kurer/gateway/client"

// Client is a gateway client acting as the named node's account, with its
// key: tests use it to put hand-made (tampered, forged) envelopes into the
// gateway past the sending agent's own checks.
func (n *Network) Client(name string) *client.Client {
	n.TB.Helper()
	nd, ok := n.Nodes[name]
	if !ok {
		n.TB.Fatalf("agenttest: no node %q", name)
	}
	c, err := client.New(client.Config{BaseURL: n.URL, AccountID: nd.ID, Signer: nd.Account.Key,
		Cert: nd.Account.Cert, TLS: n.TLS.Clone(), Audience: n.Audience})
	if err != nil {
		n.TB.Fatalf("agenttest: client %s: %v", name, err)
	}
	return c
}
