package simulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// APIPrefix is the path prefix of the Dataverse Web API the simulator serves.
const APIPrefix = "/api/data/v9.2/"

// Endpoint names, the values of Request.Endpoint.
const (
	EndpointPresence  = "CCaaS_GetPresence"
	EndpointPresences = "msdyn_presences"
)

// Dataverse error codes of the simulated responses.
const (
	codeBadRequest   = "0x80040203" // InvalidArgument
	codeUnauthorized = "0x80072560"
	codeNotFound     = "0x80040217" // ObjectDoesNotExist
	codeNoSegment    = "0x80060888" // OData: resource not found, method not allowed
	codeForbidden    = "0x80040220" // privilege missing
	codeUnexpected   = "0x80040216" // UnExpected
)

// Handler returns the HTTP handler of the simulated organisation's Web API.
// Paths other than the two endpoints get a Dataverse-shaped 404.
func (s *Simulator) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Simulator) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case APIPrefix + EndpointPresence, APIPrefix + EndpointPresence + "()":
		s.servePresence(w, r)
	case APIPrefix + EndpointPresences:
		s.servePresences(w, r)
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
	rec.Status = status
	var b errorBody
	b.Error.Code, b.Error.Message = code, message
	body, _ := json.Marshal(b)
	s.answered(*rec)
	h := w.Header()
	h.Set("Content-Type", "application/json; odata.metadata=minimal")
	h.Set("OData-Version", "4.0")
	w.WriteHeader(status)
	_, _ = w.Write(body)
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
func (s *Simulator) admitOrReject(w http.ResponseWriter, rec *Request) bool {
	v := s.admit(rec.AgentID, rec.At)
	if v.ok {
		return true
	}
	rec.Reason = v.reason
	setRetryAfter(w, rec, v.retryAfter, false)
	s.writeError(w, rec, http.StatusTooManyRequests, v.code, v.message)
	return false
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
	if !s.admitOrReject(w, &rec) {
		return
	}
	defer s.release(rec.AgentID)

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
		if d.retryAfter > 0 {
			setRetryAfter(w, &rec, d.retryAfter, d.retryDate)
		}
		code, msg := codeUnexpected, "An unexpected error occurred."
		switch d.status {
		case http.StatusTooManyRequests:
			code, msg = codeQuotaRequests, "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
		case http.StatusBadRequest:
			code, msg = codeBadRequest, "Invalid request."
		case http.StatusUnauthorized:
			code, msg = codeUnauthorized, "The access token is invalid."
		case http.StatusForbidden:
			code, msg = codeForbidden, "Principal user is missing prvActOnBehalfOfAnotherUser privilege."
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
	body := encodePresence(ctxURL, st)
	contentType := "application/json; odata.metadata=minimal"
	if d.malformed != "" {
		rec.Malformed = d.malformed
		body, contentType = s.malform(d.malformed, ctxURL, st, body)
	}
	rec.Status = http.StatusOK
	s.answered(rec)
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("OData-Version", "4.0")
	h.Set("x-ms-ratelimit-burst-remaining-xrm-requests", strconv.Itoa(s.remaining(rec.AgentID)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
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
	if !s.admitOrReject(w, &rec) {
		return
	}
	defer s.release(rec.AgentID)
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
	cols := presenceColumns
	if sel := r.URL.Query().Get("$select"); sel != "" {
		cols = nil
		for c := range strings.SplitSeq(sel, ",") {
			c = strings.TrimSpace(c)
			if !slices.Contains(presenceColumns, c) {
				rec.Reason = "bad-select"
				s.writeError(w, &rec, http.StatusBadRequest, codeNoSegment, fmt.Sprintf("Could not find a property named '%s' on type 'Microsoft.Dynamics.CRM.msdyn_presence'.", truncate(c, 100)))
				return
			}
			cols = append(cols, c)
		}
	}
	ctxURL := orgURL(r) + APIPrefix + "$metadata#msdyn_presences"
	if r.URL.Query().Has("$select") {
		ctxURL += "(" + strings.Join(cols, ",") + ")"
	}
	var b bytes.Buffer
	b.WriteString(`{"@odata.context":`)
	writeJSON(&b, ctxURL)
	b.WriteString(`,"value":[`)
	for i, p := range s.Presences() {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"@odata.etag":`)
		writeJSON(&b, fmt.Sprintf(`W/"%d"`, 4810000+i))
		rowCols := cols
		if !slices.Contains(rowCols, "msdyn_presenceid") {
			rowCols = append(slices.Clone(rowCols), "msdyn_presenceid") // the primary key always comes back
		}
		for _, c := range rowCols {
			b.WriteByte(',')
			writeJSON(&b, c)
			b.WriteByte(':')
			switch c {
			case "msdyn_presenceid":
				writeJSON(&b, p.ID)
			case "msdyn_name":
				writeJSON(&b, p.Name)
			case "msdyn_basepresencestatus":
				writeJSON(&b, p.BaseStatus)
			case "msdyn_presencestatustext":
				writeJSON(&b, p.Name)
			case "statecode":
				writeJSON(&b, 0)
			case "statuscode":
				writeJSON(&b, 1)
			}
		}
		b.WriteByte('}')
	}
	b.WriteString("]}")
	rec.Status = http.StatusOK
	s.answered(rec)
	h := w.Header()
	h.Set("Content-Type", "application/json; odata.metadata=minimal")
	h.Set("OData-Version", "4.0")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
}

func writeJSON(b *bytes.Buffer, v any) {
	out, _ := json.Marshal(v)
	b.Write(out)
}
