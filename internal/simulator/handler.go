package simulator

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// APIPrefix is the path prefix of the Dataverse Web API the simulator serves.
const APIPrefix = "/api/data/v9.2/"

// Endpoint names, the values of Request.Endpoint.
const (
	EndpointPresence   = "CCaaS_GetPresence"
	EndpointPresences  = "msdyn_presences"
	EndpointCustomAPIs = "customapis"
	// EndpointAgentStatuses is the entity set of msdyn_agentstatus.
	EndpointAgentStatuses = "msdyn_agentstatuses"
	// EndpointAgentStatusHistories is the entity set of
	// msdyn_agentstatushistory.
	EndpointAgentStatusHistories = "msdyn_agentstatushistories"
)

// Dataverse error codes of the simulated responses.
const (
	codeBadRequest   = "0x80040203" // InvalidArgument
	codeUnauthorized = "0x80072560"
	codeNotFound     = "0x80040217" // ObjectDoesNotExist
	codeNoSegment    = "0x80060888" // OData: resource not found, method not allowed
	codeBadSegment   = "0x8006088a" // OData: resource not found for the segment
	codeForbidden    = "0x80040220" // privilege missing
	codeUnexpected   = "0x80040216" // UnExpected
)

// Handler returns the HTTP handler of the simulated organisation's Web API.
// Paths other than the two endpoints get a Dataverse-shaped 404.
func (s *Simulator) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Simulator) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch path := r.URL.Path; {
	case strings.HasPrefix(path, APIPrefix+EndpointPresence) &&
		(len(path) == len(APIPrefix+EndpointPresence) || path[len(APIPrefix+EndpointPresence)] == '('):
		s.servePresence(w, r)
	case path == APIPrefix+EndpointPresences:
		s.servePresences(w, r)
	case path == APIPrefix+EndpointCustomAPIs:
		s.serveCustomAPIs(w, r)
	case path == APIPrefix+EndpointAgentStatuses || path == APIPrefix+EndpointAgentStatusHistories:
		s.serveFeed(w, r, strings.TrimPrefix(path, APIPrefix))
	default:
		rec := Request{At: s.now(), Method: r.Method, Reason: "not-found"}
		seg := strings.TrimPrefix(r.URL.Path, APIPrefix)
		s.writeError(w, &rec, http.StatusNotFound, codeNoSegment, fmt.Sprintf("Resource not found for the segment '%s'.", truncate(seg, 100)))
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// errorBody is Dataverse's error response.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeError answers with a Dataverse-shaped error and records the request.
func (s *Simulator) writeError(w http.ResponseWriter, rec *Request, status int, code, message string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, message
	body, _ := json.Marshal(b)
	s.writeOData(w, rec, status, body)
}

// setRetryAfter sets the Retry-After header and records it.
func setRetryAfter(w http.ResponseWriter, rec *Request, d time.Duration, date bool) {
	v, until := retryAfterHeader(rec.At, d, date)
	w.Header().Set("Retry-After", v)
	rec.RetryAfter, rec.RetryUntil = v, until
}

// gate checks the method and the bearer token, and parses MSCRMCallerID
// (required or not). It writes the error and returns false when the request
// must stop.
func (s *Simulator) gate(w http.ResponseWriter, r *http.Request, rec *Request, callerRequired bool) bool {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		rec.Reason = "method"
		s.writeError(w, rec, http.StatusMethodNotAllowed, codeNoSegment, fmt.Sprintf("The requested resource does not support http method '%s'.", truncate(r.Method, 20)))
		return false
	}
	tok := ""
	if scheme, t, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		tok = strings.TrimSpace(t)
	}
	if err := s.authenticate(tok, rec.At); err != nil {
		desc := "The access token is missing or invalid."
		switch err {
		case errNoToken:
			rec.Reason = "no-token"
			w.Header().Set("WWW-Authenticate", `Bearer authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize`)
		case errTokenExpired:
			rec.Reason = "token-expired"
			desc = "The access token has expired."
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="The access token has expired"`)
		default:
			rec.Reason = "token-refused"
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="The access token is invalid"`)
		}
		s.writeError(w, rec, http.StatusUnauthorized, codeUnauthorized, desc)
		return false
	}
	raw, present := r.Header["Mscrmcallerid"]
	switch {
	case !present && callerRequired:
		rec.Reason = "bad-caller"
		s.writeError(w, rec, http.StatusBadRequest, codeBadRequest, "The MSCRMCallerID header is required: the ID of the agent whose presence is requested.")
		return false
	case present:
		id, ok := "", len(raw) == 1
		if ok {
			id, ok = parseGUID(strings.TrimSpace(raw[0]))
		}
		if !ok {
			rec.Reason = "bad-caller"
			s.writeError(w, rec, http.StatusBadRequest, codeBadRequest, "The MSCRMCallerID header must be one GUID.")
			return false
		}
		rec.AgentID = id
	}
	return true
}

// admitOrReject applies service protection to the request's user; it
// returns false after writing the 429.
func (s *Simulator) admitOrReject(w http.ResponseWriter, rec *Request) (quotaVerdict, bool) {
	v := s.admit(rec.AgentID, rec.At)
	if v.ok {
		return v, true
	}
	rec.Reason = v.reason
	s.setRateLimitHeaders(w, rec)
	setRetryAfter(w, rec, v.retryAfter, false)
	s.writeError(w, rec, http.StatusTooManyRequests, v.code, v.message)
	return v, false
}

// setRateLimitHeaders sets the x-ms-ratelimit-* headers of the user the
// request is charged to.
func (s *Simulator) setRateLimitHeaders(w http.ResponseWriter, rec *Request) {
	burst, exec := s.rateLimitHeaders(rec.AgentID, rec.At)
	w.Header().Set("x-ms-ratelimit-burst-remaining-xrm-requests", burst)
	w.Header().Set("x-ms-ratelimit-time-remaining-xrm-requests", exec)
}

// Call forms of CCaaS_GetPresence the simulated organisation accepts
// (Options.CallForm).
const (
	// CallFormBare accepts only GET …/CCaaS_GetPresence (and "()"), as the
	// contract gives it; the function form is an unknown segment (404
	// 0x8006088a). The default.
	CallFormBare = "bare"
	// CallFormFunction requires the parameter:
	// GET …/CCaaS_GetPresence(ApiVersion=@v)?@v='1.0'. The bare form is
	// answered 400 (required parameter missing), "()" 404 (unknown
	// segment).
	CallFormFunction = "function"
	// CallFormBoth accepts either form (an optional parameter).
	CallFormBoth = "both"
)

// checkCallForm answers a call in a form the organisation does not accept
// and returns false; true lets the request through.
func (s *Simulator) checkCallForm(w http.ResponseWriter, r *http.Request, rec *Request) bool {
	seg := strings.TrimPrefix(r.URL.Path, APIPrefix)
	args, hasParens := strings.CutPrefix(seg, EndpointPresence)
	hasParens = hasParens && args != ""
	args = strings.TrimSuffix(strings.TrimPrefix(args, "("), ")")
	mode := s.opts.CallForm
	if args == "" {
		if mode == CallFormFunction {
			rec.Reason = "call-form"
			if hasParens {
				s.writeError(w, rec, http.StatusNotFound, codeBadSegment, fmt.Sprintf("Resource not found for the segment '%s'.", truncate(seg, 100)))
			} else {
				s.writeError(w, rec, http.StatusBadRequest, codeNoSegment, "Required parameter 'ApiVersion' is missing for the function 'Microsoft.Dynamics.CRM.CCaaS_GetPresence'.")
			}
			return false
		}
		return true
	}
	name, val, _ := strings.Cut(args, "=")
	if mode == CallFormBare || mode == "" || strings.TrimSpace(name) != "ApiVersion" {
		rec.Reason = "call-form"
		s.writeError(w, rec, http.StatusNotFound, codeBadSegment, fmt.Sprintf("Resource not found for the segment '%s'.", truncate(seg, 100)))
		return false
	}
	val = strings.TrimSpace(val)
	if strings.HasPrefix(val, "@") {
		v, ok := r.URL.Query()[val]
		if !ok || len(v) != 1 {
			rec.Reason = "call-form"
			s.writeError(w, rec, http.StatusBadRequest, codeNoSegment, fmt.Sprintf("The parameter alias '%s' has no value: the parameter 'ApiVersion' is missing.", truncate(val, 20)))
			return false
		}
		val = v[0]
	}
	if val != "'1.0'" {
		rec.Reason = "call-form"
		s.writeError(w, rec, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("ApiVersion %s is not supported; use '1.0'.", truncate(val, 20)))
		return false
	}
	return true
}

// orgURL is the organisation URL as the client addressed it.
func orgURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// presenceBody is the CCaaS_GetPresence response.
// It is declared here, not shared with internal/source, on purpose: the
// simulator shares no code with the client, so that it catches the client's
// mistakes.
type presenceBody struct {
	Context                   string   `json:"@odata.context"`
	ActiveBrowserSessions     int      `json:"ActiveBrowserSessions"`
	AgentID                   string   `json:"AgentId"`
	AgentName                 string   `json:"AgentName"`
	Timestamp                 int64    `json:"Timestamp"`
	AllowedChannels           []string `json:"AllowedChannels"`
	CurrentPresenceStatusInfo string   `json:"CurrentPresenceStatusInfo"`
	DisabledChannels          []string `json:"DisabledChannels"`
	PresenceID                string   `json:"PresenceId"`
}

// presenceKeys are the documented keys of the response.
var presenceKeys = []string{"ActiveBrowserSessions", "AgentId", "AgentName", "Timestamp", "AllowedChannels", "CurrentPresenceStatusInfo", "DisabledChannels", "PresenceId"}

// encodePresence renders st as the organisation is configured to: with
// Options.NullEmpty, empty channel lists and the Timestamp of an agent who
// is not logged in are null; with Options.ExtraKeys, undocumented keys of
// several JSON types are added.
func (s *Simulator) encodePresence(ctxURL string, st AgentState) []byte {
	if !s.opts.NullEmpty && !s.opts.ExtraKeys {
		return encodePresence(ctxURL, st)
	}
	var m map[string]any
	_ = json.Unmarshal(encodePresence(ctxURL, st), &m)
	if s.opts.NullEmpty {
		for _, k := range []string{"AllowedChannels", "DisabledChannels"} {
			if l, _ := m[k].([]any); len(l) == 0 {
				m[k] = nil
			}
		}
		if st.ActiveBrowserSessions == 0 {
			m["Timestamp"] = nil
		}
	}
	if s.opts.ExtraKeys {
		m["@odata.etag"] = nil
		m["msdyn_capacity"] = map[string]any{"units": 100, "profiles": []any{"default", nil}}
		m["IsBot"] = false
		m["LastActivity"] = st.Timestamp
	}
	out, _ := json.Marshal(m)
	return out
}

func encodePresence(ctxURL string, st AgentState) []byte {
	b := presenceBody{
		Context:                   ctxURL,
		ActiveBrowserSessions:     st.ActiveBrowserSessions,
		AgentID:                   st.AgentID,
		AgentName:                 st.AgentName,
		Timestamp:                 st.Timestamp,
		AllowedChannels:           st.AllowedChannels,
		CurrentPresenceStatusInfo: st.PresenceName,
		DisabledChannels:          st.DisabledChannels,
		PresenceID:                st.PresenceID,
	}
	if b.AllowedChannels == nil {
		b.AllowedChannels = []string{}
	}
	if b.DisabledChannels == nil {
		b.DisabledChannels = []string{}
	}
	out, _ := json.Marshal(b)
	return out
}

func (s *Simulator) servePresence(w http.ResponseWriter, r *http.Request) {
	rec := Request{At: s.now(), Method: r.Method, Endpoint: EndpointPresence}
	if !s.gate(w, r, &rec, true) {
		return
	}
	s.arrived(rec.AgentID, rec.At)
	if !s.checkCallForm(w, r, &rec) {
		return
	}
	v, ok := s.admitOrReject(w, &rec)
	if !ok {
		return
	}
	released := false
	release := func() {
		if !released {
			released = true
			s.release(v)
		}
	}
	defer release()

	d := s.decide(rec.AgentID, rec.At)
	rec.Reason, rec.Latency = d.reason, d.latency
	if d.latency > 0 {
		t := time.NewTimer(d.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			rec.Status, rec.Reason = 499, "client-gone"
			s.answered(rec)
			return
		}
	}
	if d.status != 0 {
		release()
		s.setRateLimitHeaders(w, &rec)
		switch {
		case d.retryRaw != "":
			w.Header().Set("Retry-After", d.retryRaw)
			rec.RetryAfter = d.retryRaw
		case d.retryAfter > 0:
			setRetryAfter(w, &rec, d.retryAfter, d.retryDate)
		}
		code, msg := codeUnexpected, "An unexpected error occurred."
		switch d.status {
		case http.StatusTooManyRequests:
			code, msg = codeQuotaRequests, "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
			switch d.code {
			case codeQuotaExecution:
				code, msg = codeQuotaExecution, "Combined execution time of incoming requests exceeded limit of 1200000 milliseconds over time window of 300 seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later."
			case codeQuotaConcurrent:
				code, msg = codeQuotaConcurrent, "Number of concurrent requests exceeded the limit of 52."
			}
		case http.StatusMethodNotAllowed:
			code, msg = codeNoSegment, "API not allowed: the application is not allowlisted for the Contact Center APIs."
		case http.StatusBadRequest:
			code, msg = codeBadRequest, "Invalid request."
		case http.StatusUnauthorized:
			code, msg = codeUnauthorized, "The access token is invalid."
		case http.StatusForbidden:
			code, msg = codeForbidden, "Principal user is missing prvActOnBehalfOfAnotherUser privilege."
			if d.code != "" {
				code = d.code
			}
		case http.StatusNotFound:
			code, msg = codeNotFound, fmt.Sprintf("systemuser With Id = %s Does Not Exist", rec.AgentID)
		}
		s.writeError(w, &rec, d.status, code, msg)
		return
	}

	st, ok := s.State(rec.AgentID)
	if !ok {
		rec.Reason = "unknown-agent"
		s.writeError(w, &rec, http.StatusNotFound, codeNotFound, fmt.Sprintf("systemuser With Id = %s Does Not Exist", rec.AgentID))
		return
	}
	ctxURL := orgURL(r) + APIPrefix + "$metadata#Microsoft.Dynamics.CRM.CCaaS_GetPresenceResponse"
	body := s.encodePresence(ctxURL, st)
	contentType := odataContentType
	if d.malformed != "" {
		rec.Malformed = d.malformed
		body, contentType = s.malform(d.malformed, ctxURL, st, body)
	}
	release()
	rec.Status = http.StatusOK
	s.answered(rec)
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("OData-Version", "4.0")
	s.setRateLimitHeaders(w, &rec)
	if s.opts.Gzip && acceptsGzip(r) {
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		_, _ = zw.Write(body)
		_ = zw.Close()
		body = zb.Bytes()
		h.Set("Content-Encoding", "gzip")
		h.Add("Vary", "Accept-Encoding")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// acceptsGzip reports whether the request accepts a gzip-encoded body.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			enc, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(enc, "gzip") {
				return true
			}
		}
	}
	return false
}

// serveCustomAPIs answers the customapis query a client makes to learn the
// form of CCaaS_GetPresence: the row of the API with its request
// parameters expanded, as the organisation's CallForm implies.
func (s *Simulator) serveCustomAPIs(w http.ResponseWriter, r *http.Request) {
	rec := Request{At: s.now(), Method: r.Method, Endpoint: EndpointCustomAPIs}
	if !s.gate(w, r, &rec, false) {
		return
	}
	if st := s.opts.CustomAPIsStatus; st != 0 {
		rec.Reason = "customapis-fault"
		code, msg := codeUnexpected, "An unexpected error occurred."
		if st == http.StatusForbidden {
			code, msg = codeForbidden, "Principal user is missing prvReadCustomAPI privilege."
		}
		s.writeError(w, &rec, st, code, msg)
		return
	}
	type param struct {
		UniqueName string `json:"uniquename"`
		Name       string `json:"name"`
		Type       int    `json:"type"`
		IsOptional bool   `json:"isoptional"`
	}
	type row struct {
		ID         string  `json:"customapiid"`
		UniqueName string  `json:"uniquename"`
		IsFunction bool    `json:"isfunction"`
		Params     []param `json:"CustomAPIRequestParameters"`
	}
	out := struct {
		Context string `json:"@odata.context"`
		Value   []row  `json:"value"`
	}{Context: orgURL(r) + APIPrefix + "$metadata#customapis", Value: []row{}}
	if strings.Contains(r.URL.Query().Get("$filter"), "'"+EndpointPresence+"'") {
		api := row{ID: "6c1d8f0e-2b3a-4c5d-9e8f-0a1b2c3d4e5f", UniqueName: EndpointPresence, IsFunction: true, Params: []param{}}
		switch s.opts.CallForm {
		case CallFormFunction:
			api.Params = append(api.Params, param{UniqueName: "ApiVersion", Name: "ApiVersion", Type: 10})
		case CallFormBoth:
			api.Params = append(api.Params, param{UniqueName: "ApiVersion", Name: "ApiVersion", Type: 10, IsOptional: true})
		}
		out.Value = append(out.Value, api)
	}
	body, _ := json.Marshal(out)
	s.writeOData(w, &rec, http.StatusOK, body)
}

// malform breaks a 200 body the given way.
func (s *Simulator) malform(kind MalformedKind, ctxURL string, st AgentState, body []byte) ([]byte, string) {
	const ct = "application/json; odata.metadata=minimal"
	switch kind {
	case MalformedNotJSON:
		return []byte("<html><head><title>Service Unavailable</title></head><body><h1>The service is unavailable.</h1></body></html>"), "text/html"
	case MalformedTruncated:
		return body[:len(body)/2], ct
	case MalformedEmpty:
		return nil, ct
	case MalformedWrongAgent:
		other := st
		other.AgentID = ""
		for _, a := range s.Agents() {
			if a.AgentID != st.AgentID {
				other = a
				break
			}
		}
		if other.AgentID == "" {
			s.fmu.Lock()
			other.AgentID = newGUID(s.frng)
			s.fmu.Unlock()
		}
		return encodePresence(ctxURL, other), ct
	case MalformedOversize:
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		m["Padding"] = strings.Repeat("x", 1<<20+1024)
		out, _ := json.Marshal(m)
		return out, ct
	}
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	key := presenceKeys[s.drawIntN(len(presenceKeys))]
	if kind == MalformedMissingKey {
		delete(m, key)
	} else { // MalformedWrongType
		switch v := m[key].(type) {
		case string:
			m[key] = 42
		case float64:
			m[key] = strconv.FormatFloat(v, 'f', -1, 64)
		default: // a list
			m[key] = "chat"
		}
	}
	out, _ := json.Marshal(m)
	return out, ct
}

// presenceColumns are the msdyn_presence columns the simulator knows, in
// the order of an unrestricted query.
var presenceColumns = []string{"msdyn_presenceid", "msdyn_name", "msdyn_basepresencestatus", "msdyn_presencestatustext", "statecode", "statuscode"}

func (s *Simulator) servePresences(w http.ResponseWriter, r *http.Request) {
	rec := Request{At: s.now(), Method: r.Method, Endpoint: EndpointPresences}
	if !s.gate(w, r, &rec, false) {
		return
	}
	if rec.AgentID != "" {
		s.arrived(rec.AgentID, rec.At)
	}
	v, ok := s.admitOrReject(w, &rec)
	if !ok {
		return
	}
	defer s.release(v)
	if st := s.Faults().PresencesStatus; st != 0 {
		rec.Reason = "presences-fault"
		code, msg := codeUnexpected, "An unexpected error occurred."
		switch st {
		case http.StatusForbidden:
			code, msg = codeForbidden, "Principal user is missing prvReadmsdyn_presence privilege."
		case http.StatusTooManyRequests:
			setRetryAfter(w, &rec, time.Second, false)
			code, msg = codeQuotaRequests, "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
		}
		s.writeError(w, &rec, st, code, msg)
		return
	}
	cols, msg := selectColumns(r.URL.Query(), presenceColumns, "msdyn_presence")
	if msg != "" {
		rec.Reason = "bad-select"
		s.writeError(w, &rec, http.StatusBadRequest, codeNoSegment, msg)
		return
	}
	var rows []map[string]any
	for _, p := range s.Presences() {
		rows = append(rows, map[string]any{
			"msdyn_presenceid": p.ID, "msdyn_name": p.Name, "msdyn_basepresencestatus": p.BaseStatus,
			"msdyn_presencestatustext": p.Name, "statecode": 0, "statuscode": 1,
		})
	}
	page := collection{context: orgURL(r) + APIPrefix + "$metadata#msdyn_presences", selected: r.URL.Query().Has("$select"),
		cols: cols, key: "msdyn_presenceid", rows: rows, etag: 4810000}
	s.writeOData(w, &rec, http.StatusOK, page.encode())
}
