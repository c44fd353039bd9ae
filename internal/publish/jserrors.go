// jserrors.go holds what JetStream's errors mean to the bridge: the API
// error codes it compares, each named, how a failed publish is classified
// (classify), and which failures only mean that JetStream is not ready yet
// (JetStreamUnavailable, UnavailableReason).
//
// The authority on the codes is nats-server's server/errors.json (each
// entry's "constant", "code" and "description"); nats.go's jetstream package
// declares some of them as jetstream.JSErrCode..., used here where they
// exist.

package publish

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream API error codes the bridge compares that nats.go does not
// declare; the name in parentheses is nats-server's (server/errors.json).
const (
	// errCodeClusterIncomplete (JSClusterIncompleteErr, "incomplete
	// results"): not every server of the cluster answered a request.
	errCodeClusterIncomplete jetstream.ErrorCode = 10004
	// errCodeClusterNoPeers (JSClusterNoPeersErrF): no suitable peers to
	// place the asset on, e.g. fewer servers up than its replicas.
	errCodeClusterNoPeers jetstream.ErrorCode = 10005
	// errCodeClusterNotAvailable (JSClusterNotAvailErr, "JetStream system
	// temporarily unavailable"): the cluster has no meta leader yet.
	errCodeClusterNotAvailable jetstream.ErrorCode = 10008
	// errCodeClusterNotLeader (JSClusterNotLeaderErr, "JetStream cluster
	// can not handle request"): the server asked is not the leader and
	// cannot forward the request.
	errCodeClusterNotLeader jetstream.ErrorCode = 10009
	// errCodeInsufficientResources (JSInsufficientResourcesErr,
	// "insufficient resources"): no server has the storage or memory the
	// asset asks for.
	errCodeInsufficientResources jetstream.ErrorCode = 10023
	// errCodePeerRemap (JSPeerRemapErr, "peer remap failed"): the asset's
	// replicas could not be moved to other servers.
	errCodePeerRemap jetstream.ErrorCode = 10075
	// errCodeStreamOffline (JSStreamOfflineErr, "stream is offline"): the
	// stream's replicas have no leader to answer.
	errCodeStreamOffline jetstream.ErrorCode = 10118
	// errCodeExpectedLastSeqPerSubjectNotReady
	// (JSStreamExpectedLastSeqPerSubjectNotReady, "expected last sequence
	// per subject temporarily unavailable"): a new stream leader cannot
	// check a per-subject fence until it has caught up.
	errCodeExpectedLastSeqPerSubjectNotReady jetstream.ErrorCode = 10163
)

// The codes nats.go declares, and what JetStream means by each, as the
// bridge uses them:
//
//   - jetstream.JSErrCodeStreamWrongLastSequence, 10071
//     (JSStreamWrongLastSequenceErrF, "wrong last sequence: {seq}"): a
//     fence (Nats-Expected-Last-Subject-Sequence) failed: the subjects'
//     last message is not at the expected sequence.
//   - jetstream.JSErrCodeStreamWrongLastSequenceConstant, 10164
//     (JSStreamWrongLastSequenceConstantErr, "wrong last sequence"): the
//     same, as replicated streams answer it.
//   - jetstream.JSErrCodeStreamMessageExceedsMaximum, 10054
//     (JSStreamMessageExceedsMaximumErr, "message size exceeds maximum
//     allowed"): the message is larger than the stream or server accepts.
//   - jetstream.JSErrCodeStreamNotFound, 10059 (JSStreamNotFoundErr,
//     "stream not found").
//   - jetstream.JSErrCodeJetStreamNotEnabled, 10076 (JSNotEnabledErr,
//     "JetStream not enabled"): also what the client reports when nobody
//     answers on $JS.API, as while JetStream starts.

// classify names a publish failure for the errors metric and says whether it
// is permanent (retrying cannot help).
func classify(err error) (reason string, permanent bool) {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return reasonRejected, true
	case errors.As(err, &apiErr):
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			return reasonFenced, false
		case jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return reasonRejected, true
		case jetstream.JSErrCodeStreamNotFound:
			return reasonNoStream, false
		}
		return reasonOther, false
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return reasonTimeout, false
	case errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrReconnectBufExceeded):
		return reasonDisconnected, false
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return reasonNoStream, false
	}
	return reasonOther, false
}

// unavailableCodes are the JetStream API error codes meaning "not ready
// yet": the cluster is forming, has no meta leader, or has fewer peers than
// the replicas asked for; each with the reason /readyz shows.
var unavailableCodes = map[jetstream.ErrorCode]string{
	errCodeClusterIncomplete:                 "incomplete results",
	errCodeClusterNoPeers:                    "no suitable peers for placement",
	errCodeClusterNotAvailable:               "JetStream temporarily unavailable",
	errCodeClusterNotLeader:                  "JetStream cluster can not handle the request",
	errCodeInsufficientResources:             "insufficient resources",
	errCodePeerRemap:                         "peer remap failed",
	errCodeStreamOffline:                     "stream offline",
	errCodeExpectedLastSeqPerSubjectNotReady: "expected last sequence per subject temporarily unavailable",
	jetstream.JSErrCodeJetStreamNotEnabled:   "no JetStream responders",
}

// JetStreamUnavailable reports whether err means that the NATS servers are
// there but JetStream cannot answer or place the asset yet: no meta leader,
// fewer peers than replicas (err_code 10005), temporarily unavailable
// (10008), insufficient resources (10023), no responders on $JS.API, a
// request timeout, or the connection between servers. Such a failure is the
// same as unreachable servers: retry. Everything else, in particular a
// stream whose settings differ (*StreamMismatchError), a missing stream with
// management off (ErrStreamMissing), JetStream not enabled for the account
// (10039) and permission violations, is not: retrying would only hide it.
func JetStreamUnavailable(err error) bool {
	var mismatch *StreamMismatchError
	switch {
	case err == nil,
		errors.As(err, &mismatch),
		errors.Is(err, ErrStreamMissing),
		errors.Is(err, context.Canceled),
		errors.Is(err, nats.ErrConnectionClosed),
		isPermissionError(err):
		return false
	}
	if code, ok := apiErrorCode(err); ok {
		_, unavailable := unavailableCodes[code]
		return unavailable
	}
	return errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrNoServers)
}

// apiErrorCode returns the JetStream API error code err carries, if any.
func apiErrorCode(err error) (jetstream.ErrorCode, bool) {
	var je jetstream.JetStreamError
	if errors.As(err, &je) && je.APIError() != nil {
		return je.APIError().ErrorCode, true
	}
	return 0, false
}

// isPermissionError reports whether err is a NATS permission violation.
func isPermissionError(err error) bool {
	return errors.Is(err, nats.ErrPermissionViolation) ||
		strings.Contains(strings.ToLower(err.Error()), "permissions violation")
}

// UnavailableReason is a short reason for a JetStreamUnavailable error, for
// /readyz: the API error's meaning and code, or the client error.
func UnavailableReason(err error) string {
	if code, ok := apiErrorCode(err); ok {
		if what, known := unavailableCodes[code]; known {
			return fmt.Sprintf("%s (err_code %d)", what, code)
		}
		return fmt.Sprintf("%s (err_code %d)", strings.TrimSpace(errorDescription(err)), code)
	}
	var last error = err
	for u := errors.Unwrap(last); u != nil; u = errors.Unwrap(last) {
		last = u
	}
	return last.Error()
}

// errorDescription returns the JetStream API error's description, or err's
// text when it carries none.
func errorDescription(err error) string {
	var je jetstream.JetStreamError
	if errors.As(err, &je) && je.APIError() != nil {
		return je.APIError().Description
	}
	return err.Error()
}
