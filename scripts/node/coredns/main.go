// Command coredns is CoreDNS with only the plugins the real node's cluster DNS uses: the
// kubernetes plugin answers *.svc names from the API server; nothing is forwarded anywhere.
// Built by scripts/build-node.sh in a wrapper module that requires github.com/coredns/coredns.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
