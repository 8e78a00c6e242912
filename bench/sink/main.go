// Command sink answers the partner endpoints the worker calls with each partner's success shape, at
// little CPU cost, and counts what it received; the benchmark's throughput phases send to it.
//
//	sink [-addr 127.0.0.1:0]
//
// It prints its base URL on the first line of stdout. Endpoints:
//
//	GET|POST /saq_pxl                       StackAdapt pixel: 200, a 1x1 GIF
//	POST /open_api/v1.3/event/track/        TikTok: 200 {"code":0,"message":"OK",...}; counts data[] items
//	                                        (a body without a data[] item: 400, counted as rejected)
//	POST /segment/{websiteId}/{operation}   Seg: 200 for identify, track, page and alias
//	GET  /_sink/stats                       counters as JSON
//	POST /_sink/record?on=1|0               keep (or stop keeping) each request's arrival time and bytes
//	GET  /_sink/requests                    the kept requests as JSON (bodies base64), then forgets them
//	POST /_sink/reset                       zero the counters and forget kept requests
//
// The Python simulator stays the tool for correctness and faults; this one only has to be cheap.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const tiktokPath = "/open_api/v1.3/event/track/"

// 1x1 transparent GIF, as tracking pixels answer.
var pixelGIF, _ = base64.StdEncoding.DecodeString("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

var segOperations = map[string]bool{"identify": true, "track": true, "page": true, "alias": true}

type counters struct {
	total, stackadapt, tiktok, tiktokItems, seg, unknown, rejected, bodyBytes atomic.Int64
}

type record struct {
	At     float64 `json:"at"` // Unix time in seconds when the request's body had been read
	Method string  `json:"method"`
	URI    string  `json:"uri"` // path and query exactly as sent
	Body   []byte  `json:"body"`
}

type sink struct {
	c         counters
	recording atomic.Bool
	mu        sync.Mutex
	records   []record
	ids       atomic.Int64
}

// maxRecords bounds memory when a caller forgets to stop recording.
const maxRecords = 1 << 20

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if strings.HasPrefix(path, "/_sink/") {
		s.control(w, r)
		return
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	if _, err := buf.ReadFrom(r.Body); err != nil {
		// The client went away mid-body: nothing arrived that could be counted.
		return
	}
	body := buf.Bytes()
	s.c.total.Add(1)
	s.c.bodyBytes.Add(int64(len(body)))
	if s.recording.Load() {
		s.keep(r, body)
	}
	h := w.Header()
	switch {
	case path == "/saq_pxl" && (r.Method == http.MethodGet || r.Method == http.MethodPost):
		s.c.stackadapt.Add(1)
		h["Content-Type"] = []string{"image/gif"}
		h["Cache-Control"] = []string{"no-cache, no-store, must-revalidate"}
		h["Content-Length"] = []string{strconv.Itoa(len(pixelGIF))}
		w.Write(pixelGIF)
	case (path == tiktokPath || path == strings.TrimSuffix(tiktokPath, "/")) && r.Method == http.MethodPost:
		var envelope struct {
			Data []json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(body, &envelope); err != nil || len(envelope.Data) == 0 {
			s.c.rejected.Add(1)
			s.answerTikTok(w, http.StatusBadRequest, 40002, "Invalid parameters")
			return
		}
		s.c.tiktok.Add(1)
		s.c.tiktokItems.Add(int64(len(envelope.Data)))
		s.answerTikTok(w, http.StatusOK, 0, "OK")
	case strings.HasPrefix(path, "/segment/") && r.Method == http.MethodPost:
		parts := strings.Split(path[len("/segment/"):], "/")
		if len(parts) != 2 || parts[0] == "" || !segOperations[parts[1]] {
			s.c.rejected.Add(1)
			http.Error(w, "unknown operation", http.StatusNotFound)
			return
		}
		s.c.seg.Add(1)
		h["Content-Length"] = []string{"0"}
		w.WriteHeader(http.StatusOK)
	default:
		s.c.unknown.Add(1)
		http.Error(w, "no partner serves "+r.Method+" "+path, http.StatusNotFound)
	}
}

func (s *sink) answerTikTok(w http.ResponseWriter, status, code int, message string) {
	id := time.Now().UTC().Format("20060102150405") + fmt.Sprintf("%012X", s.ids.Add(1))
	out := fmt.Appendf(nil, `{"code":%d,"message":%q,"request_id":"%s","data":{}}`, code, message, id)
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.WriteHeader(status)
	w.Write(out)
}

func (s *sink) keep(r *http.Request, body []byte) {
	rec := record{
		At:     float64(time.Now().UnixNano()) / 1e9,
		Method: r.Method,
		URI:    r.RequestURI,
		Body:   append([]byte(nil), body...),
	}
	s.mu.Lock()
	if len(s.records) < maxRecords {
		s.records = append(s.records, rec)
	}
	s.mu.Unlock()
}

func (s *sink) stats() map[string]int64 {
	c := &s.c
	return map[string]int64{
		"total":        c.total.Load(),
		"stackadapt":   c.stackadapt.Load(),
		"tiktok":       c.tiktok.Load(),
		"tiktok_items": c.tiktokItems.Load(),
		"seg":          c.seg.Load(),
		"unknown":      c.unknown.Load(),
		"rejected":     c.rejected.Load(),
		"body_bytes":   c.bodyBytes.Load(),
	}
}

func (s *sink) control(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	var out any
	switch {
	case r.URL.Path == "/_sink/stats" && r.Method == http.MethodGet:
		out = s.stats()
	case r.URL.Path == "/_sink/record" && r.Method == http.MethodPost:
		s.recording.Store(r.URL.Query().Get("on") != "0")
		out = map[string]bool{"recording": s.recording.Load()}
	case r.URL.Path == "/_sink/requests" && r.Method == http.MethodGet:
		s.mu.Lock()
		kept := s.records
		s.records = nil
		s.mu.Unlock()
		if kept == nil {
			kept = []record{}
		}
		out = kept
	case r.URL.Path == "/_sink/reset" && r.Method == http.MethodPost:
		for _, v := range []*atomic.Int64{
			&s.c.total, &s.c.stackadapt, &s.c.tiktok, &s.c.tiktokItems,
			&s.c.seg, &s.c.unknown, &s.c.rejected, &s.c.bodyBytes,
		} {
			v.Store(0)
		}
		s.mu.Lock()
		s.records = nil
		s.mu.Unlock()
		out = s.stats()
	default:
		http.Error(w, "unknown control endpoint", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (port 0 picks a free one)")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stdout, "http://%s\n", ln.Addr().String())
	os.Stdout.Sync()
	srv := &http.Server{
		Handler:           &sink{},
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second,
		// Idle clients and benchmarks do not need the server's error log on stderr.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	log.Fatal(srv.Serve(ln))
}
