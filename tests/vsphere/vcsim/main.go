// vcsim for guestprep tests: the govmomi vCenter simulator over TLS on 127.0.0.1.
// Prints one JSON line {"url": ..., "pid": ...} once serving; exits when stdin closes.
// The login is VCSIM_USER / VCSIM_PASSWORD from the environment (never argv).
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"io/ioutil"
	"log"
	"net/url"
	"os"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	cert := flag.String("cert", "", "PEM certificate")
	key := flag.String("key", "", "PEM private key")
	vms := flag.Int("vm", 2, "VMs per resource pool")
	hosts := flag.Int("host", 3, "hosts per cluster")
	verbose := flag.Bool("v", false, "simulator log on stderr")
	delay := flag.Int("delay", 0, "milliseconds added to every SOAP call (models network + vCenter latency)")
	flag.Parse()
	if !*verbose {
		log.SetOutput(ioutil.Discard) // keep the simulator's chatter off our pipes
	}

	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		os.Stderr.WriteString("vcsim: " + err.Error() + "\n")
		os.Exit(2)
	}
	model := simulator.VPX()
	model.Machine = *vms
	model.ClusterHost = *hosts
	model.DelayConfig.Delay = *delay
	if err := model.Create(); err != nil {
		os.Stderr.WriteString("vcsim: " + err.Error() + "\n")
		os.Exit(2)
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0",
		User: url.UserPassword(os.Getenv("VCSIM_USER"), os.Getenv("VCSIM_PASSWORD"))}
	server := model.Service.NewServer()
	out, _ := json.Marshal(map[string]interface{}{"url": server.URL.Host, "pid": os.Getpid()})
	os.Stdout.Write(append(out, '\n'))
	ioutil.ReadAll(os.Stdin) // serve until the test closes our stdin
	server.Close()
	model.Remove()
}
