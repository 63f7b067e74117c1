//! The `/metrics` page, rendered once and shared by every client that asks for it at about the
//! same time, so that memory does not grow with the number of clients.
//!
//! Every client gets a [`Bytes`] pointing at the same rendered text, never a copy of it.
//! Concurrent scrapes share one render (single flight), and a page younger than
//! [`PageLimits::max_age`] is reused. At most [`PageLimits::max_pages`] distinct pages exist at
//! once, counting the one being rendered: when slow clients still hold that many, a scrape gets
//! the newest of them instead of a new render. The pages held are then at most `max_pages` times
//! the size of one, however many clients there are. Several [`SharedPages`] (one per format and
//! encoding) can share the cap through a [`PageBudget`]: a scrape in a format none of the held
//! pages is in is then refused ([`RenderFailed::Busy`]) rather than rendered past it.
//!
//! This module knows nothing of HTTP or of what a page says: it is given the function that
//! renders one, and runs it on tokio's blocking threads. The render also returns what the page
//! shows of its source (an `S`, such as how far each partition's messages are counted in it),
//! which every scrape of that page gets with it.

use bytes::Bytes;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    /// A page younger than this is served again instead of rendering a new one.
    pub max_age: Duration,
    /// At most this many distinct pages exist at once, the one being rendered included (at least 1).
    pub max_pages: usize,
}

/// How a scrape got its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// This scrape started the render.
    Rendered,
    /// It shared a render in progress, or a page younger than `max_age`.
    Shared,
    /// `max_pages` pages were still held by clients: it got the newest of them, rendered this long ago.
    AtLimit { age: Duration },
}

#[derive(Debug)]
pub struct Page<S> {
    pub body: Bytes,
    pub served: Served,
    /// What the page shows of its source, as its render returned it.
    pub shows: S,
}

/// Why a scrape got no page.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderFailed {
    /// The render panicked (or was abandoned); the next scrape tries again.
    #[error("rendering the page failed: {0}")]
    Failed(String),
    /// `max_pages` pages are held by slow clients, none of them of the kind asked for.
    #[error("{0} pages are held by slow clients, none in the format asked for (http.max_pages)")]
    Busy(usize),
}

/// How many pages exist (alive, or being rendered) in a group of [`SharedPages`] that share
/// `max_pages`: one per format and encoding, whose pages all count against the one cap.
#[derive(Debug, Clone, Default)]
pub struct PageBudget(Arc<std::sync::atomic::AtomicUsize>);

impl PageBudget {
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn take(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn give_back(&self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The pages of one endpoint. Cloning it shares them.
pub struct SharedPages<S> {
    limits: PageLimits,
    state: Arc<Mutex<Pages<S>>>,
    budget: PageBudget,
}

impl<S> Clone for SharedPages<S> {
    fn clone(&self) -> Self {
        SharedPages {
            limits: self.limits,
            state: self.state.clone(),
            budget: self.budget.clone(),
        }
    }
}

type RenderOutcome<S> = Result<(Bytes, S), RenderFailed>;

struct Pages<S> {
    /// Pages rendered that a client may still hold, oldest first. Weak: a page lives exactly as
    /// long as some client holds it, and is freed by the last one.
    held: Vec<HeldPage<S>>,
    /// While a render is in progress, the scrapes waiting for it. Each is handed the page itself,
    /// so that no reference to it outlives theirs.
    rendering: Option<Vec<oneshot::Sender<RenderOutcome<S>>>>,
}

impl<S> Default for Pages<S> {
    fn default() -> Self {
        Pages {
            held: Vec::new(),
            rendering: None,
        }
    }
}

struct HeldPage<S> {
    /// When its render started: the age of what it shows.
    rendered_at: Instant,
    text: Weak<Rendered>,
    shows: S,
}

/// A rendered page; its place in the budget is given back when the last client lets go of it.
struct Rendered {
    bytes: Vec<u8>,
    budget: PageBudget,
}

impl Drop for Rendered {
    fn drop(&mut self) {
        self.budget.give_back();
    }
}

/// A rendered page as the owner of the bytes every client gets.
struct PageText(Arc<Rendered>);

impl AsRef<[u8]> for PageText {
    fn as_ref(&self) -> &[u8] {
        &self.0.bytes
    }
}

fn body(text: Arc<Rendered>) -> Bytes {
    Bytes::from_owner(PageText(text))
}

enum Next<S> {
    Ready(Page<S>),
    Wait(oneshot::Receiver<RenderOutcome<S>>, Served),
    Busy(usize),
}

impl<S: Clone + Send + 'static> SharedPages<S> {
    pub fn new(limits: PageLimits) -> SharedPages<S> {
        SharedPages::sharing(limits, PageBudget::default())
    }

    /// Pages whose number counts against `budget` together with those of the other
    /// [`SharedPages`] given it: `limits.max_pages` bounds them all.
    pub fn sharing(limits: PageLimits, budget: PageBudget) -> SharedPages<S> {
        SharedPages {
            limits: PageLimits {
                max_pages: limits.max_pages.max(1),
                ..limits
            },
            state: Arc::default(),
            budget,
        }
    }

    /// A page for one scrape: shared, reused, or rendered by `render` on a blocking thread.
    ///
    /// The scrape is registered before this returns (it joins or starts a render right away),
    /// and a render once started finishes even if every scrape waiting for it gives up.
    pub fn get<F>(&self, render: F) -> impl Future<Output = Result<Page<S>, RenderFailed>> + Send + 'static
    where
        F: FnOnce() -> (Vec<u8>, S) + Send + 'static,
    {
        let next = self.next(render);
        async move {
            let (outcome, served) = match next {
                Next::Ready(page) => return Ok(page),
                Next::Busy(held) => return Err(RenderFailed::Busy(held)),
                Next::Wait(outcome, served) => (outcome, served),
            };
            match outcome.await {
                Ok(Ok((body, shows))) => Ok(Page { body, served, shows }),
                Ok(Err(failed)) => Err(failed),
                Err(_) => Err(RenderFailed::Failed("the render was abandoned".into())),
            }
        }
    }

    fn next<F>(&self, render: F) -> Next<S>
    where
        F: FnOnce() -> (Vec<u8>, S) + Send + 'static,
    {
        let now = Instant::now();
        let mut pages = lock(&self.state);
        pages.held.retain(|page| page.text.strong_count() > 0);
        let newest = (pages.held.last()).and_then(|page| {
            let age = now.saturating_duration_since(page.rendered_at);
            Some((age, page.text.upgrade()?, page.shows.clone()))
        });
        if let Some((age, text, shows)) = &newest {
            if *age < self.limits.max_age {
                return Next::Ready(Page {
                    body: body(text.clone()),
                    served: Served::Shared,
                    shows: shows.clone(),
                });
            }
        }
        if let Some(waiting) = &mut pages.rendering {
            let (sender, receiver) = oneshot::channel();
            waiting.push(sender);
            return Next::Wait(receiver, Served::Shared);
        }
        let held = self.budget.count();
        if held >= self.limits.max_pages {
            return match newest {
                Some((age, text, shows)) => Next::Ready(Page {
                    body: body(text),
                    served: Served::AtLimit { age },
                    shows,
                }),
                None => Next::Busy(held),
            };
        }
        let (sender, receiver) = oneshot::channel();
        pages.rendering = Some(vec![sender]);
        self.budget.take();
        drop(pages);
        let in_flight = RenderInFlight {
            state: self.state.clone(),
            started: now,
            finished: false,
            budget: self.budget.clone(),
        };
        tokio::task::spawn_blocking(move || {
            let rendered = std::panic::catch_unwind(AssertUnwindSafe(render));
            in_flight.finish(rendered);
        });
        Next::Wait(receiver, Served::Rendered)
    }
}

/// The one render in progress. Whatever becomes of it (done, panicked, or dropped unrun when the
/// runtime shuts down) it ends the single flight and answers everyone waiting.
struct RenderInFlight<S: Clone> {
    state: Arc<Mutex<Pages<S>>>,
    started: Instant,
    finished: bool,
    /// Holds a place for the page: the page takes it over, a failed render gives it back.
    budget: PageBudget,
}

impl<S: Clone> RenderInFlight<S> {
    fn finish(mut self, rendered: std::thread::Result<(Vec<u8>, S)>) {
        self.finished = true;
        match rendered {
            Ok((mut text, shows)) => {
                // The render grew the text by doubling: give back the unused half before it is held.
                text.shrink_to_fit();
                let text = Arc::new(Rendered {
                    bytes: text,
                    budget: self.budget.clone(),
                });
                let waiting = {
                    let mut pages = lock(&self.state);
                    pages.held.push(HeldPage {
                        rendered_at: self.started,
                        text: Arc::downgrade(&text),
                        shows: shows.clone(),
                    });
                    pages.rendering.take()
                };
                answer(waiting, Ok((body(text), shows)));
            }
            Err(panic) => {
                let why = (panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "it panicked".into());
                self.budget.give_back();
                let waiting = lock(&self.state).rendering.take();
                answer(waiting, Err(RenderFailed::Failed(why)));
            }
        }
    }
}

impl<S: Clone> Drop for RenderInFlight<S> {
    fn drop(&mut self) {
        if !self.finished {
            self.budget.give_back();
            let waiting = lock(&self.state).rendering.take();
            answer(waiting, Err(RenderFailed::Failed("the render was abandoned".into())));
        }
    }
}

/// Sends `outcome` to every scrape waiting: a copy to each but the last, which gets `outcome`
/// itself, so that once they have all let go of the page nothing else holds it.
fn answer<S: Clone>(waiting: Option<Vec<oneshot::Sender<RenderOutcome<S>>>>, outcome: RenderOutcome<S>) {
    let mut waiting = waiting.unwrap_or_default();
    let last = waiting.pop();
    for scrape in waiting {
        let _ = scrape.send(outcome.clone());
    }
    if let Some(scrape) = last {
        let _ = scrape.send(outcome);
    }
}

fn lock<S>(state: &Mutex<Pages<S>>) -> MutexGuard<'_, Pages<S>> {
    // Nothing panics while holding it, and its state is consistent between statements anyway.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    fn pages(max_age: Duration, max_pages: usize) -> SharedPages<usize> {
        SharedPages::new(PageLimits { max_age, max_pages })
    }

    /// A render that counts itself and writes which render it was, and shows its number.
    fn counted(renders: &Arc<AtomicUsize>) -> impl FnOnce() -> (Vec<u8>, usize) + Send + 'static {
        let renders = renders.clone();
        move || {
            let n = renders.fetch_add(1, Ordering::SeqCst) + 1;
            (format!("page {n}\n").into_bytes(), n)
        }
    }

    /// A render that counts itself once `release` is sent: it holds the render in progress.
    fn gated(renders: &Arc<AtomicUsize>) -> (mpsc::Sender<()>, impl FnOnce() -> (Vec<u8>, usize) + Send + 'static) {
        let (release, gate) = mpsc::channel::<()>();
        let renders = renders.clone();
        let render = move || {
            let _ = gate.recv();
            (b"the page\n".to_vec(), renders.fetch_add(1, Ordering::SeqCst) + 1)
        };
        (release, render)
    }

    fn same_memory(a: &Bytes, b: &Bytes) -> bool {
        a.as_ptr() == b.as_ptr() && a.len() == b.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_render() {
        let pages = pages(Duration::ZERO, 3);
        let renders = Arc::new(AtomicUsize::new(0));
        let (release, gated) = gated(&renders);
        let first = pages.get(gated);
        // Registered while the first render is held at its gate: they must join it.
        let others: Vec<_> = (0..8).map(|_| pages.get(counted(&renders))).collect();
        release.send(()).unwrap();
        let first = first.await.unwrap();
        assert_eq!(first.served, Served::Rendered);
        for other in others {
            let other = other.await.unwrap();
            assert_eq!(other.served, Served::Shared);
            assert!(same_memory(&other.body, &first.body), "a copy, not the shared page");
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1);
        assert_eq!(&first.body[..], b"the page\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_young_page_is_reused_and_an_old_one_rendered_again() {
        let renders = Arc::new(AtomicUsize::new(0));
        let reusing = pages(Duration::from_secs(3600), 3);
        let a = reusing.get(counted(&renders)).await.unwrap();
        let b = reusing.get(counted(&renders)).await.unwrap();
        assert_eq!((a.served, b.served), (Served::Rendered, Served::Shared));
        assert!(same_memory(&a.body, &b.body));
        assert_eq!((a.shows, b.shows), (1, 1));
        assert_eq!(renders.load(Ordering::SeqCst), 1);

        let renders = Arc::new(AtomicUsize::new(0));
        let fresh = pages(Duration::ZERO, 3);
        let a = fresh.get(counted(&renders)).await.unwrap();
        let b = fresh.get(counted(&renders)).await.unwrap();
        assert_eq!((a.served, b.served), (Served::Rendered, Served::Rendered));
        assert_eq!((&a.body[..], &b.body[..]), (&b"page 1\n"[..], &b"page 2\n"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_max_pages_exist_then_the_newest_is_served() {
        let pages = pages(Duration::ZERO, 3);
        let renders = Arc::new(AtomicUsize::new(0));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(pages.get(counted(&renders)).await.unwrap());
        }
        // Three pages held by slow clients: no fourth is rendered, whatever the number of scrapes.
        for _ in 0..10 {
            let page = pages.get(counted(&renders)).await.unwrap();
            assert!(matches!(page.served, Served::AtLimit { .. }), "{:?}", page.served);
            assert!(same_memory(&page.body, &held[2].body), "the newest page, shared");
            assert_eq!(page.shows, 3, "with what it shows");
        }
        assert_eq!(renders.load(Ordering::SeqCst), 3);
        // The newest page is held by those ten too, but it is still one page: once the oldest is
        // released, there is room to render again.
        held.remove(0);
        let page = pages.get(counted(&renders)).await.unwrap();
        assert_eq!(page.served, Served::Rendered);
        assert_eq!(&page.body[..], b"page 4\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_that_share_a_budget_share_the_cap() {
        let budget = PageBudget::default();
        let limits = PageLimits {
            max_age: Duration::ZERO,
            max_pages: 2,
        };
        let (text, gzip) = (
            SharedPages::<usize>::sharing(limits, budget.clone()),
            SharedPages::<usize>::sharing(limits, budget.clone()),
        );
        let renders = Arc::new(AtomicUsize::new(0));
        let held = [
            text.get(counted(&renders)).await.unwrap(),
            text.get(counted(&renders)).await.unwrap(),
        ];
        assert!(matches!(gzip.get(counted(&renders)).await, Err(RenderFailed::Busy(2))));
        assert!(matches!(
            text.get(counted(&renders)).await.unwrap().served,
            Served::AtLimit { .. }
        ));
        drop(held);
        assert_eq!(budget.count(), 0, "every page gave its place back");
        assert_eq!(gzip.get(counted(&renders)).await.unwrap().served, Served::Rendered);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_page_nobody_holds_is_forgotten() {
        let pages = pages(Duration::ZERO, 2);
        let renders = Arc::new(AtomicUsize::new(0));
        for _ in 0..10 {
            let page = pages.get(counted(&renders)).await.unwrap();
            assert_eq!(page.served, Served::Rendered);
        }
        assert_eq!(renders.load(Ordering::SeqCst), 10);
        assert!(lock(&pages.state).held.len() <= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_render_fails_its_scrapes_and_the_next_one_renders_again() {
        let pages = pages(Duration::from_secs(3600), 3);
        let failed = pages
            .get(|| -> (Vec<u8>, usize) { panic!("the aggregation is poisoned") })
            .await
            .unwrap_err();
        assert!(failed.to_string().contains("the aggregation is poisoned"), "{failed}");
        let renders = Arc::new(AtomicUsize::new(0));
        let page = pages.get(counted(&renders)).await.unwrap();
        assert_eq!(page.served, Served::Rendered);
        assert_eq!(&page.body[..], b"page 1\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scrape_that_gives_up_does_not_stop_the_render() {
        let pages = pages(Duration::from_secs(3600), 3);
        let renders = Arc::new(AtomicUsize::new(0));
        let (release, gated) = gated(&renders);
        drop(pages.get(gated));
        let joined = pages.get(counted(&renders));
        release.send(()).unwrap();
        let page = joined.await.unwrap();
        assert_eq!(page.served, Served::Shared);
        assert_eq!(&page.body[..], b"the page\n");
        assert_eq!(renders.load(Ordering::SeqCst), 1);
    }
}
