// Command coredns is CoreDNS with the plugins a one-node cluster's DNS
// needs (the kubernetes plugin and the usual health, readiness, cache and
// logging around it), in the order CoreDNS's plugin.cfg runs them.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"errors", "log", "health", "ready", "cache", "kubernetes"}
}

func main() { coremain.Run() }
