package simulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// odataContentType is the Content-Type of Dataverse's JSON answers.
const odataContentType = "application/json; odata.metadata=minimal"

// writeOData answers with status and an OData JSON body, and records the
// request. Headers the answer needs besides the content type and the OData
// version are set before.
func (s *Simulator) writeOData(w http.ResponseWriter, rec *Request, status int, body []byte) {
	rec.Status = status
	s.answered(*rec)
	h := w.Header()
	h.Set("Content-Type", odataContentType)
	h.Set("OData-Version", "4.0")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// selectColumns returns the columns the query's $select names, in its
// order, or all of columns without one; for a column entity does not have
// it returns Dataverse's error message instead.
func selectColumns(q url.Values, columns []string, entity string) (cols []string, errMsg string) {
	sel := q.Get("$select")
	if sel == "" {
		return columns, ""
	}
	for c := range strings.SplitSeq(sel, ",") {
		c = strings.TrimSpace(c)
		if !slices.Contains(columns, c) {
			return nil, fmt.Sprintf("Could not find a property named '%s' on type 'Microsoft.Dynamics.CRM.%s'.", truncate(c, 100), entity)
		}
		cols = append(cols, c)
	}
	return cols, ""
}

// collection is one page of an OData collection answer.
type collection struct {
	// context is the @odata.context URL; the selected columns are added
	// to it when the query had $select.
	context  string
	selected bool
	cols     []string
	// key is the primary key column, which every row carries whether
	// selected or not.
	key  string
	rows []map[string]any
	// etag is the first row's version number; each next row's is one more.
	etag int
	// next is the @odata.nextLink, "" on the last page.
	next string
}

// encode writes the page as Dataverse does: context, value (each row its
// etag, then its columns, times in whole seconds), nextLink.
func (c collection) encode() []byte {
	var b bytes.Buffer
	ctxURL := c.context
	if c.selected {
		ctxURL += "(" + strings.Join(c.cols, ",") + ")"
	}
	b.WriteString(`{"@odata.context":`)
	writeJSON(&b, ctxURL)
	b.WriteString(`,"value":[`)
	rowCols := c.cols
	if !slices.Contains(rowCols, c.key) {
		rowCols = append(slices.Clone(rowCols), c.key) // the primary key always comes back
	}
	for i, row := range c.rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"@odata.etag":`)
		writeJSON(&b, fmt.Sprintf(`W/"%d"`, c.etag+i))
		for _, col := range rowCols {
			b.WriteByte(',')
			writeJSON(&b, col)
			b.WriteByte(':')
			switch v := row[col].(type) {
			case time.Time:
				writeJSON(&b, v.UTC().Format("2006-01-02T15:04:05Z")) // Dataverse returns whole seconds
			default:
				writeJSON(&b, v)
			}
		}
		b.WriteByte('}')
	}
	b.WriteByte(']')
	if c.next != "" {
		b.WriteString(`,"@odata.nextLink":`)
		writeJSON(&b, c.next)
	}
	b.WriteByte('}')
	return b.Bytes()
}

func writeJSON(b *bytes.Buffer, v any) {
	out, _ := json.Marshal(v)
	b.Write(out)
}
