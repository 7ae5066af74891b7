package agenttest

import "github.com/kurer/kurer/agent"

// ConfigFunc adjusts a node's agent.Config before its agent is built (pins,
// a metrics listener, a unix socket for the local API, timeouts). It runs
// at every start, when every node of n has its account id.
type ConfigFunc func(n *Network, cfg *agent.Config)

// StopGateway stops the network's gateway and waits for it to return; the
// agents keep running and find it unreachable. It is idempotent.
func (n *Network) StopGateway() { n.stopGateway() }
