// vcsim for the cutover's streaming tests: tests/vsphere/vcsim/main.go plus one thing govmomi's
// simulator (0.24) does not do and vCenter does: /folder (datastore files over HTTPS) answers only
// a client presenting a live SOAP session cookie, else 401 ("vSphere Web Services SDK Programming
// Guide", HTTP access to datastore files: the request must carry the vmware_soap_session cookie of
// an authenticated session). The session is checked with the simulator's own SessionIsActive
// (govmomi simulator/session_manager.go), so a logged-out or unknown cookie is refused.
// $VCSIM_FOLDER_DELAY_FILE, when that file exists, holds milliseconds every /folder GET waits
// first (a slow datastore: a conversion long enough to kill its controller midway).
// Prints one JSON line {"url": ..., "pid": ...} once serving; exits when stdin closes.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"io/ioutil"
	"log"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func liveSession(r *http.Request, user string) bool {
	c, err := r.Cookie(soap.SessionCookieName)
	if err != nil {
		return false
	}
	ctx := &simulator.Context{Map: simulator.Map}
	res := simulator.Map.SessionManager().SessionIsActive(ctx, &types.SessionIsActive{SessionID: c.Value, UserName: user})
	body, ok := res.(*methods.SessionIsActiveBody)
	return ok && body.Res != nil && body.Res.Returnval
}

func folderDelay() {
	name := os.Getenv("VCSIM_FOLDER_DELAY_FILE")
	if name == "" {
		return
	}
	if raw, err := ioutil.ReadFile(name); err == nil {
		if ms, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
	}
}

func main() {
	cert := flag.String("cert", "", "PEM certificate")
	key := flag.String("key", "", "PEM private key")
	vms := flag.Int("vm", 2, "VMs per resource pool")
	hosts := flag.Int("host", 3, "hosts per cluster")
	delay := flag.Int("delay", 0, "milliseconds added to every SOAP call")
	flag.Bool("v", false, "accepted for tests/vsphere/simulator.py; the log stays off")
	flag.Parse()
	log.SetOutput(ioutil.Discard)

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
	user := os.Getenv("VCSIM_USER")
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(user, os.Getenv("VCSIM_PASSWORD"))}
	server := model.Service.NewServer()
	// Set before the address is printed: nobody can have connected yet.
	inner := server.Config.Handler
	server.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/folder/") && !liveSession(r, user) {
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/folder/") && r.Method == http.MethodGet {
			folderDelay()
		}
		inner.ServeHTTP(w, r)
	})
	out, _ := json.Marshal(map[string]interface{}{"url": server.URL.Host, "pid": os.Getpid()})
	os.Stdout.Write(append(out, '\n'))
	ioutil.ReadAll(os.Stdin)
	server.Close()
	model.Remove()
}
