package bulkclient

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// Reporter shows a person what the export is doing.
type Reporter interface {
	Logf(format string, args ...any)
	// Polling is called for each in-progress status reply.
	Polling(progress string)
	// Downloads announces the files; total resources is -1 when unknown.
	Downloads(files int, totalResources int64)
	FileStarted(name string, count *int64) FileProgress
	FileDone(name string, lines, bytes int64, skipped bool)
	DownloadsDone()
}

// FileProgress follows one download.
type FileProgress interface {
	Add(lines, bytes int64)
	Done(err error)
}

type nopReporter struct{}

func (nopReporter) Logf(string, ...any)                     {}
func (nopReporter) Polling(string)                          {}
func (nopReporter) Downloads(int, int64)                    {}
func (nopReporter) FileStarted(string, *int64) FileProgress { return nopFile{} }
func (nopReporter) FileDone(string, int64, int64, bool)     {}
func (nopReporter) DownloadsDone()                          {}

type nopFile struct{}

func (nopFile) Add(int64, int64) {}
func (nopFile) Done(error)       {}

// LineReporter writes plain timestamped lines: for logs and pipes.
type LineReporter struct {
	W    io.Writer
	mu   sync.Mutex
	last string
	at   time.Time
}

func (r *LineReporter) printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.W, time.Now().Format("15:04:05")+" "+format+"\n", args...)
}

// Logf implements Reporter.
func (r *LineReporter) Logf(format string, args ...any) { r.printf(format, args...) }

// Polling implements Reporter; it prints a progress text when it changes
// (or every 30 s).
func (r *LineReporter) Polling(p string) {
	if p == "" {
		p = "in progress"
	}
	r.mu.Lock()
	changed := p != r.last || time.Since(r.at) > 30*time.Second
	if changed {
		r.last, r.at = p, time.Now()
	}
	r.mu.Unlock()
	if changed {
		r.printf("server: %s", p)
	}
}

// Downloads implements Reporter.
func (r *LineReporter) Downloads(files int, total int64) {
	if total >= 0 {
		r.printf("export complete: downloading %d files, %d resources", files, total)
		return
	}
	r.printf("export complete: downloading %d files", files)
}

// FileStarted implements Reporter.
func (r *LineReporter) FileStarted(string, *int64) FileProgress { return nopFile{} }

// FileDone implements Reporter.
func (r *LineReporter) FileDone(name string, lines, bytes int64, skipped bool) {
	if skipped {
		r.printf("kept %s (%d resources, already complete)", name, lines)
		return
	}
	r.printf("downloaded %s: %d resources, %s", name, lines, humanBytes(bytes))
}

// DownloadsDone implements Reporter.
func (r *LineReporter) DownloadsDone() {}

// BarReporter draws a live status line while the server works, then a bar
// per file and a total bar with rate and ETA.
type BarReporter struct {
	W     io.Writer
	mu    sync.Mutex
	p     *mpb.Progress
	total *mpb.Bar
	poll  *mpb.Bar
	text  string
}

func (r *BarReporter) progress() *mpb.Progress {
	if r.p == nil {
		r.p = mpb.New(mpb.WithOutput(r.W), mpb.WithWidth(32), mpb.WithRefreshRate(150*time.Millisecond))
	}
	return r.p
}

// Logf implements Reporter (printed above the bars).
func (r *BarReporter) Logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p == nil {
		fmt.Fprintf(r.W, format+"\n", args...)
		return
	}
	r.logBar(fmt.Sprintf(format, args...))
}

func (r *BarReporter) logBar(msg string) {
	b := r.p.AddBar(0, mpb.BarFillerClearOnComplete(), mpb.PrependDecorators(decor.Name(msg)))
	b.SetTotal(0, true)
}

// Polling implements Reporter.
func (r *BarReporter) Polling(p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p == "" {
		p = "in progress"
	}
	r.text = p
	if r.poll == nil {
		start := time.Now()
		r.poll = r.progress().New(0, mpb.SpinnerStyle(), mpb.BarFillerClearOnComplete(),
			mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
				r.mu.Lock()
				defer r.mu.Unlock()
				return fmt.Sprintf("server: %s  (%s)", r.text, time.Since(start).Round(time.Second))
			})))
	}
}

// Downloads implements Reporter.
func (r *BarReporter) Downloads(files int, total int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.poll != nil {
		r.poll.SetTotal(0, true)
	}
	if total < 0 {
		total = 0
	}
	r.total = r.progress().AddBar(total,
		mpb.PrependDecorators(decor.Name(fmt.Sprintf("total (%d files)", files), decor.WCSyncSpaceR)),
		mpb.AppendDecorators(
			decor.CountersNoUnit("%d / %d resources", decor.WCSyncSpace),
			decor.AverageSpeed(nil, " %.0f/s", decor.WCSyncSpace),
			decor.OnComplete(decor.EwmaETA(decor.ET_STYLE_GO, 30, decor.WCSyncSpace), " done"),
		))
}

type barFile struct {
	r   *BarReporter
	bar *mpb.Bar
	n   int64
}

func (f *barFile) Add(lines, bytes int64) {
	f.bar.IncrInt64(bytes)
	if f.r.total != nil {
		f.r.total.EwmaIncrInt64(lines, 200*time.Millisecond)
	}
	f.n += bytes
}

func (f *barFile) Done(err error) {
	if err != nil {
		f.bar.Abort(false)
		return
	}
	f.bar.SetTotal(f.n, true)
}

// FileStarted implements Reporter.
func (r *BarReporter) FileStarted(name string, _ *int64) FileProgress {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.progress().AddBar(0, mpb.BarFillerClearOnComplete(), mpb.BarRemoveOnComplete(),
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(decor.Current(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace),
			decor.AverageSpeed(decor.SizeB1024(0), " % .1f", decor.WCSyncSpace)))
	return &barFile{r: r, bar: b}
}

// FileDone implements Reporter.
func (r *BarReporter) FileDone(name string, lines, _ int64, skipped bool) {
	if skipped {
		r.mu.Lock()
		if r.total != nil {
			r.total.IncrInt64(lines)
		}
		r.mu.Unlock()
	}
}

// DownloadsDone implements Reporter: the bars are finished and flushed.
func (r *BarReporter) DownloadsDone() {
	r.mu.Lock()
	p, total := r.p, r.total
	r.mu.Unlock()
	if total != nil {
		total.SetTotal(-1, true)
	}
	if p != nil {
		p.Wait()
	}
}
