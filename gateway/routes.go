package gateway

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
	"github.com/kurer/kurer/internal/errs"
)

// apiRoutes are the agents' routes (method + pattern), for the handler and
// for the test that checks every route is in openapi.yaml.
func (s *Server) apiRoutes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"POST " + api.PathToken:                    s.handleToken,
		"GET " + api.PathJWKS:                      s.handleJWKS,
		"GET " + api.PathAccounts:                  s.authed(s.handleLookup),
		"GET " + api.PathAccount + "{account}":     s.authed(s.handleAccountGet),
		"PUT " + api.PathMessages + "{id}":         s.authed(s.handleSubmit),
		"HEAD " + api.PathMessages + "{id}":        s.authed(s.handleUploadOffset),
		"GET " + api.PathMessages + "{id}/status":  s.authed(s.handleStatus),
		"GET " + api.PathMailbox:                   s.authed(s.handlePoll),
		"GET " + api.PathMailbox + "/{id}/content": s.authed(s.handleContent),
		"POST " + api.PathMailbox + "/{id}/ack":    s.authed(s.handleAck),
		"POST " + api.PathMailbox + "/ack":         s.authed(s.handleAckBatch),
		"POST " + api.PathMailbox + "/{id}/reject": s.authed(s.handleReject),
		"GET " + api.PathHealth:                    s.handleHealth,
		"GET " + api.PathReady:                     s.handleReady,
		"GET " + api.PathOpenAPI:                   s.handleOpenAPI,
	}
}

// adminRoutes are the operators' routes.
func (s *Server) adminRoutes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"POST " + api.PathAdminAccounts:                                      s.operator(s.handleAccountCreate),
		"GET " + api.PathAdminAccounts:                                       s.operator(s.handleAccountList),
		"GET " + api.PathAdminAccounts + "/{account}":                        s.operator(s.handleAccountShow),
		"PUT " + api.PathAdminAccounts + "/{account}":                        s.operator(s.handleAccountUpdate),
		"DELETE " + api.PathAdminAccounts + "/{account}":                     s.operator(s.handleAccountDelete),
		"POST " + api.PathAdminAccounts + "/{account}/certs":                 s.operator(s.handleCertAdd),
		"DELETE " + api.PathAdminAccounts + "/{account}/certs/{fingerprint}": s.operator(s.handleCertRemove),
		"GET " + api.PathAdminMessages:                                       s.operator(s.handleAdminMessages),
	}
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.fail(w, r, errs.New(errs.NotFound, nil))
}

// handleRoutes registers routes ("METHOD /path" -> handler) on mux and,
// for each of their paths, a handler of every other method that answers
// 405 method_not_allowed with an Allow header. ServeMux answers 405 with
// Allow by itself, but as text/plain and only while no pattern without a
// method (such as the "/" catch-all that makes unknown paths a JSON 404)
// matches the path. A pattern with a method is more specific than the same
// path without one, so the routes themselves still win.
func (s *Server) handleRoutes(mux *http.ServeMux, routes ...map[string]http.HandlerFunc) {
	allowed := map[string][]string{}
	for _, rs := range routes {
		for p, h := range rs {
			mux.HandleFunc(p, h)
			method, path, ok := strings.Cut(p, " ")
			if !ok {
				panic("gateway: route without method: " + p)
			}
			allowed[path] = append(allowed[path], method)
			if method == http.MethodGet { // ServeMux serves HEAD with GET
				allowed[path] = append(allowed[path], http.MethodHead)
			}
		}
	}
	for path, methods := range allowed {
		slices.Sort(methods)
		allow := strings.Join(slices.Compact(methods), ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			s.fail(w, r, errs.New(errs.MethodNotAllowed, nil))
		})
	}
}

func (s *Server) apiHandler() http.Handler {
	mux := http.NewServeMux()
	if s.adminLn == nil {
		s.handleRoutes(mux, s.apiRoutes(), s.adminRoutes())
	} else {
		s.handleRoutes(mux, s.apiRoutes())
		// Operator endpoints live on the admin listener only.
		mux.HandleFunc(api.PathAdmin, func(w http.ResponseWriter, r *http.Request) {
			s.fail(w, r, errs.New(errs.OperatorOnly, nil))
		})
	}
	mux.HandleFunc("/", s.notFound)
	return s.instrument(s.recoverPanics(mux))
}

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	s.handleRoutes(mux, s.adminRoutes(), map[string]http.HandlerFunc{
		"GET " + api.PathHealth: s.handleHealth,
		"GET " + api.PathReady:  s.handleReady,
	})
	mux.HandleFunc("/", s.notFound)
	return s.instrument(s.recoverPanics(mux))
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) handleReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	if !s.ready.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready\n"))
		return
	}
	// A store that cannot commit (failed, stalled or closed) makes every
	// submit, lease and ack fail: take this gateway out of rotation.
	if h, ok := s.st.(interface{ Health() error }); ok {
		if err := h.Health(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: store unavailable\n"))
			return
		}
	}
	_, _ = w.Write([]byte("ready\n"))
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(OpenAPI)
}

func (s *Server) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(s.signer.jwks)
}

// handleAdminMessages is GET /v1/admin/messages?state=&account=&type=&older_than=&limit=.
func (s *Server) handleAdminMessages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.MessageFilter{State: q.Get("state"), Account: q.Get("account"), Type: q.Get("type"), Limit: api.MaxMessagesListed}
	if v := q.Get("older_than"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			s.fail(w, r, errs.Newf(errs.BadRequest, "older_than must be a duration such as 1h"))
			return
		}
		f.OlderThan = s.now().Add(-d)
	}
	items, err := s.st.Messages(r.Context(), f)
	if err != nil {
		s.fail(w, r, errs.New(errs.Internal, err))
		return
	}
	out := make([]api.MessageStatus, 0, len(items))
	for _, it := range items {
		out = append(out, toStatus(it))
	}
	writeJSON(w, http.StatusOK, out)
}
