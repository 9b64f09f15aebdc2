package node

import (
	"net/http"
	"net/http/pprof"
)

// DebugConfig switches on diagnostics. They are off by default: a
// profile shows what the node runs, not mail, but it costs CPU while it
// is taken and is nobody's business but the operator's.
type DebugConfig struct {
	// PProf serves Go's runtime profiles (CPU, heap, goroutines, mutex
	// and block) under /debug/pprof/ on the HTTP listener, for
	// `go tool pprof http://HOST:PORT/debug/pprof/profile?seconds=30`.
	// The benchmark harness turns it on to record where a run's time
	// goes. Keep the HTTP listener on a private address when it is on.
	PProf bool `toml:"pprof"`
}

// registerPProf mounts the runtime profiles on mux.
func registerPProf(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
