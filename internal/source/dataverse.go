package source

import (
	"encoding/json"
	"net/http"
	"strings"
	"unicode"
)

// MaxErrorBody bounds how much of an error response body is read and
// parsed; Dataverse error bodies are a few hundred bytes.
const MaxErrorBody = 8 << 10

// MaxErrorMessage bounds the Dataverse error message kept in a PollError.
const MaxErrorMessage = 300

// Dataverse error codes the bridge recognises (the "code" of an error body,
// {"error":{"code":"0x…","message":"…"}}).
const (
	// CodeRequestCount is the service-protection 429 for more than 6,000
	// requests in 5 minutes.
	CodeRequestCount = "0x80072322"
	// CodeExecutionTime is the service-protection 429 for more than 20
	// minutes of combined execution time in 5 minutes.
	CodeExecutionTime = "0x80072321"
	// CodeConcurrency is the service-protection 429 for more than 52
	// concurrent requests.
	CodeConcurrency = "0x80072326"
	// CodeUnknownSegment is OData's "Resource not found for the segment".
	CodeUnknownSegment = "0x8006088a"
	// CodeObjectNotFound is Dataverse's ObjectDoesNotExist: the agent is
	// not a systemuser of the organisation.
	CodeObjectNotFound = "0x80040217"
	// CodePrivilegeMissing is Dataverse's privilege check failure.
	CodePrivilegeMissing = "0x80040220"
	// CodeActOnBehalf is the missing prvActOnBehalfOfAnotherUser privilege
	// of the calling application user (impersonation refused).
	CodeActOnBehalf = "0x8004a110"
	// CodeUserDisabled is a disabled user, or one without a business unit
	// or licence.
	CodeUserDisabled = "0x80040225"
	// CodeUnauthorized is the code of a refused bearer token.
	CodeUnauthorized = "0x80072560"
)

// CodeKind groups Dataverse error codes by what they mean for the bridge;
// it is the "kind" label of ccaas_bridge_dataverse_errors_total, so its
// values are few and fixed.
type CodeKind string

// Code kinds.
const (
	KindNone           CodeKind = "none"           // no Dataverse error body
	KindRequestCount   CodeKind = "request_count"  // 429 0x80072322
	KindExecutionTime  CodeKind = "execution_time" // 429 0x80072321
	KindConcurrency    CodeKind = "concurrency"    // 429 0x80072326
	KindCallForm       CodeKind = "call_form"      // unknown segment or missing parameter
	KindNotAgent       CodeKind = "not_systemuser" // the agent does not exist
	KindActOnBehalf    CodeKind = "act_on_behalf"  // impersonation privilege missing
	KindPrivilege      CodeKind = "privilege"      // another privilege or role missing
	KindNotAllowlisted CodeKind = "not_allowed"    // 405: API not allowed for the app
	KindUserDisabled   CodeKind = "user_disabled"  // disabled or unlicensed user
	KindToken          CodeKind = "token"          // 401
	KindOther          CodeKind = "other"          // any other code
)

// AllCodeKinds lists every CodeKind, for pre-creating metric labels.
func AllCodeKinds() []CodeKind {
	return []CodeKind{KindNone, KindRequestCount, KindExecutionTime, KindConcurrency, KindCallForm, KindNotAgent,
		KindActOnBehalf, KindPrivilege, KindNotAllowlisted, KindUserDisabled, KindToken, KindOther}
}

// DataverseError is the parsed error body of a non-200 answer: code and
// message, the message bounded and stripped of control characters and of
// the bearer token.
type DataverseError struct {
	// Code is the hexadecimal Dataverse code, lower-case, e.g. "0x80072322";
	// empty when the body had none.
	Code string
	// Message is Dataverse's message, at most MaxErrorMessage bytes.
	Message string
}

// parseDataverseError reads an error body. Bodies that are not Dataverse's
// error shape give a zero DataverseError.
func parseDataverseError(body []byte, secret string) DataverseError {
	var w struct {
		Error *struct {
			Code    any    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &w); err != nil || w.Error == nil {
		return DataverseError{}
	}
	var code string
	switch c := w.Error.Code.(type) {
	case string:
		code = c
	case float64: // some endpoints send the decimal code
		code = "0x" + strings.ToLower(strings.TrimLeft(formatHex(int64(c)), "0"))
	}
	return DataverseError{Code: cleanText(strings.ToLower(code), 16, secret), Message: cleanText(w.Error.Message, MaxErrorMessage, secret)}
}

// formatHex renders a (possibly negative, as Dataverse's decimal codes are)
// 32-bit code as 8 hexadecimal digits.
func formatHex(v int64) string {
	const digits = "0123456789abcdef"
	u := uint32(v)
	var b [8]byte
	for i := 7; i >= 0; i-- {
		b[i] = digits[u&0xf]
		u >>= 4
	}
	return string(b[:])
}

// cleanText bounds s to n bytes (at a rune boundary), replaces control
// characters with spaces and removes secret.
func cleanText(s string, n int, secret string) string {
	if secret != "" {
		s = redact(s, secret)
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) > n {
		cut := n
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// KindOf classifies a Dataverse answer by its HTTP status and error.
func KindOf(status int, e DataverseError) CodeKind {
	switch e.Code {
	case CodeRequestCount:
		return KindRequestCount
	case CodeExecutionTime:
		return KindExecutionTime
	case CodeConcurrency:
		return KindConcurrency
	case CodeUnknownSegment:
		return KindCallForm
	case CodeObjectNotFound:
		return KindNotAgent
	case CodeActOnBehalf:
		return KindActOnBehalf
	case CodePrivilegeMissing:
		if strings.Contains(strings.ToLower(e.Message), "actonbehalf") {
			return KindActOnBehalf
		}
		return KindPrivilege
	case CodeUserDisabled:
		return KindUserDisabled
	case CodeUnauthorized:
		return KindToken
	}
	switch {
	case status == http.StatusUnauthorized:
		return KindToken
	case status == http.StatusMethodNotAllowed:
		return KindNotAllowlisted
	case status == http.StatusBadRequest && mentionsParameter(e.Message):
		return KindCallForm
	case e.Code == "" && e.Message == "":
		return KindNone
	}
	return KindOther
}

// mentionsParameter reports whether an error message is about a function
// parameter (one that is missing, or one that is not defined).
func mentionsParameter(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "parameter") && (strings.Contains(m, "apiversion") || strings.Contains(m, "missing") || strings.Contains(m, "required") || strings.Contains(m, "not defined") || strings.Contains(m, "not found"))
}

// Hint returns what an operator should do about an error of this kind,
// or "" when there is nothing specific to say.
func (k CodeKind) Hint() string {
	switch k {
	case KindRequestCount:
		return "Dataverse's limit of 6,000 requests per 5 minutes was hit: if BRIDGE_QUOTA_SCOPE=agent, try caller (every call charged to the application user) or raise BRIDGE_POLL_INTERVAL"
	case KindExecutionTime:
		return "Dataverse's limit of 20 minutes of combined execution time per 5 minutes was hit: lower BRIDGE_MAX_CONCURRENCY or raise BRIDGE_POLL_INTERVAL"
	case KindConcurrency:
		return "Dataverse's limit of 52 concurrent requests per user was hit: lower BRIDGE_MAX_CONCURRENCY"
	case KindCallForm:
		return "the organisation does not accept this form of the CCaaS_GetPresence call: leave BRIDGE_PRESENCE_CALL=auto or set the other form (bare or function)"
	case KindNotAgent:
		return "the agent is not a systemuser of this organisation: check the GUID in BRIDGE_AGENT_IDS (the systemuserid, not the Entra object ID)"
	case KindActOnBehalf:
		return "the application user lacks prvActOnBehalfOfAnotherUser (Act on Behalf of Another User): assign it through a security role given directly to the application user, not through a team"
	case KindPrivilege:
		return "a privilege is missing: give the agent the Omnichannel Agent or Omnichannel Supervisor role and the application user a role with the privilege named in the message"
	case KindNotAllowlisted:
		return "API not allowed: the application (client ID) must be allowlisted for the Contact Center APIs in the organisation"
	case KindUserDisabled:
		return "the user is disabled or has no licence or business unit: enable it and assign a Dynamics 365 Contact Center licence"
	case KindToken:
		return "the token was refused: check that its audience is the organisation URL (scope <BRIDGE_ORG_URL>/.default), that it has not expired, and that BRIDGE_TOKEN holds the token alone without a 'Bearer ' prefix"
	}
	return ""
}
