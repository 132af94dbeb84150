package natsspool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// JetStream error codes the backend acts on (nats-server
// server/jetstream_errors_generated.go).
const (
	codeWrongLastSeq         = 10071 // an expected last sequence did not match the store
	codeWrongLastSeqInFlight = 10164 // a write to the subject is proposed, not yet applied
	codeStoreFull            = 10077 // the stream's MaxMsgs or MaxBytes with Discard: new
	codeInsufficientStorage  = 10023 // the server or account has no storage left
	codeStorageExceeded      = 10047 // insufficient storage resources available
	codeBatchIncomplete      = 10176 // a staged message of the batch is missing
	codeBatchTooMany         = 10210 // too many open batches on the stream or server
)

// Headers of an atomic batch (nats-server server/stream.go).
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
	hdrExpectLast  = "Nats-Expected-Last-Subject-Sequence"
	hdrTTL         = "Nats-TTL"
)

// apiError is a JetStream error answer.
type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("nats: %s (%d)", e.Description, e.ErrCode)
}

// batchAck is the answer to a batch's commit.
type batchAck struct {
	Stream string    `json:"stream"`
	Seq    uint64    `json:"seq"` // the last message's sequence
	Count  int       `json:"count"`
	Error  *apiError `json:"error"`
}

// errCode is the JetStream error code of err, 0 if it has none.
func errCode(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.ErrCode
	}
	var je jetstream.JetStreamError
	if errors.As(err, &je) && je.APIError() != nil {
		return int(je.APIError().ErrorCode)
	}
	return 0
}

// publishBatch stores msgs in one stream atomically, all or none, with
// consecutive sequences: JetStream's atomic batch publish (server 2.12 on),
// which nats.go v1.56.0 has no API for. The staged messages go without a
// reply subject, the commit as a request; the answer carries the last
// sequence. It returns the batch id, so that a caller whose answer was lost
// can recognise its own commit.
func publishBatch(ctx context.Context, nc *nats.Conn, msgs []*nats.Msg) (id string, ack batchAck, err error) {
	id = nuid.Next()
	for i, m := range msgs {
		m.Header.Set(hdrBatchID, id)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		if i < len(msgs)-1 {
			if err := nc.PublishMsg(m); err != nil {
				return id, ack, err
			}
			continue
		}
		m.Header.Set(hdrBatchCommit, "1")
		resp, err := nc.RequestMsgWithContext(ctx, m)
		if err != nil {
			return id, ack, err
		}
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return id, ack, fmt.Errorf("nats: batch commit answer: %w", err)
		}
		if ack.Error != nil {
			return id, ack, ack.Error
		}
	}
	return id, ack, nil
}
