package natsspool

import (
	"fmt"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/hookgate/hookgate/internal/natstest"
	"github.com/hookgate/hookgate/spool"
	"github.com/hookgate/hookgate/spool/spooltest"
)

// contractStores numbers the contract suite's stores, each under a prefix
// of its own on the shared servers.
var contractStores atomic.Int64

// contract runs the Backend contract suite against stores on s.
func contract(t *testing.T, s store) {
	spooltest.Run(t, func(t *testing.T, l spool.Limits) (spool.Backend, func() spool.Backend) {
		o := s.options(fmt.Sprintf("C%d", contractStores.Add(1)))
		o.Limits = l
		o.Logger = zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
		open := func() spool.Backend { return openWith(t, o) }
		return open(), open
	})
}

func TestContractSingleNode(t *testing.T) {
	n := natstest.StartNode(t)
	contract(t, store{servers: []string{n.URL()}, monitors: []string{n.MonitorURL()}, replicas: 1})
}

func TestContractCluster(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	contract(t, store{servers: c.URLs(), monitors: c.MonitorURLs(), replicas: 3})
}
