package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/internal/errs"
)

// AdminConfig configures an Admin client.
type AdminConfig struct {
	// BaseURL of the gateway's admin listener, e.g. https://127.0.0.1:8444.
	BaseURL string
	// Token is the operator credential (sent as Bearer token).
	Token string
	// TLS holds the roots that verify the gateway (nil: system roots).
	TLS *tls.Config
	// HTTPClient, when set, is used as is.
	HTTPClient *http.Client
}

// Admin is the operators' client of the admin API.
type Admin struct {
	base  string
	token string
	hc    *http.Client
}

// NewAdmin returns an Admin client.
func NewAdmin(cfg AdminConfig) (*Admin, error) {
	u, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("admin client: base URL %q is not absolute", cfg.BaseURL)
	}
	if cfg.Token == "" {
		return nil, errors.New("admin client: the operator token is required")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = NewHTTPClient(cfg.TLS)
		hc.Timeout = 2 * time.Minute
	}
	return &Admin{base: u.String(), token: cfg.Token, hc: hc}, nil
}

func (a *Admin) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return &errs.Error{Code: errs.Unavailable, Detail: "gateway admin API unreachable", Cause: err}
	}
	defer resp.Body.Close()
	return decode(resp, out)
}

// CreateAccount adds an account to the catalog.
func (a *Admin) CreateAccount(ctx context.Context, req api.AccountRequest) (api.Account, error) {
	var out api.Account
	return out, a.do(ctx, http.MethodPost, api.PathAdminAccounts, req, &out)
}

// Accounts lists the catalog.
func (a *Admin) Accounts(ctx context.Context) ([]api.Account, error) {
	var out []api.Account
	return out, a.do(ctx, http.MethodGet, api.PathAdminAccounts, nil, &out)
}

// Account returns one account with all its certificates.
func (a *Admin) Account(ctx context.Context, id string) (api.Account, error) {
	var out api.Account
	return out, a.do(ctx, http.MethodGet, api.PathAdminAccounts+"/"+url.PathEscape(id), nil, &out)
}

// UpdateAccount replaces an account's descriptive fields and types.
func (a *Admin) UpdateAccount(ctx context.Context, id string, req api.AccountRequest) (api.Account, error) {
	var out api.Account
	return out, a.do(ctx, http.MethodPut, api.PathAdminAccounts+"/"+url.PathEscape(id), req, &out)
}

// DeleteAccount removes an account.
func (a *Admin) DeleteAccount(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodDelete, api.PathAdminAccounts+"/"+url.PathEscape(id), nil, nil)
}

// AddCert adds a PEM certificate to an account (rotation).
func (a *Admin) AddCert(ctx context.Context, id, pemCert string) (api.Account, error) {
	var out api.Account
	return out, a.do(ctx, http.MethodPost, api.PathAdminAccounts+"/"+url.PathEscape(id)+"/certs", api.CertificateRequest{PEM: pemCert}, &out)
}

// RemoveCert removes the certificate with a SHA-256 fingerprint (hex).
func (a *Admin) RemoveCert(ctx context.Context, id, fingerprint string) (api.Account, error) {
	var out api.Account
	return out, a.do(ctx, http.MethodDelete, api.PathAdminAccounts+"/"+url.PathEscape(id)+"/certs/"+url.PathEscape(fingerprint), nil, &out)
}

// MessageFilter selects messages for Messages; zero fields match all.
type MessageFilter struct {
	State     string
	Account   string
	Type      string
	OlderThan time.Duration
}

// Messages lists messages (operator view), oldest first, at most
// api.MaxMessagesListed.
func (a *Admin) Messages(ctx context.Context, f MessageFilter) ([]api.MessageStatus, error) {
	q := url.Values{}
	for k, v := range map[string]string{"state": f.State, "account": f.Account, "type": f.Type} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.OlderThan > 0 {
		q.Set("older_than", f.OlderThan.String())
	}
	var out []api.MessageStatus
	return out, a.do(ctx, http.MethodGet, api.PathAdminMessages+"?"+q.Encode(), nil, &out)
}
