//! The `text` log format's fields: tracing's default field format, without the reconcile
//! span's fields that are redundant on a text line.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// Fields left out of text lines: the reconcile span's, redundant with `controller` there.
const TEXT_HIDDEN: [&str; 2] = ["controllerGroup", "controllerKind"];

/// tracing's default field format, without [`TEXT_HIDDEN`].
pub(super) struct TextFields;

impl<'a> MakeVisitor<Writer<'a>> for TextFields {
    type Visitor = TextVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        TextVisitor(DefaultVisitor::new(target, true))
    }
}

/// [`DefaultVisitor`] skipping [`TEXT_HIDDEN`].
pub(super) struct TextVisitor<'a>(DefaultVisitor<'a>);

fn shown(field: &Field) -> bool {
    !TEXT_HIDDEN.contains(&field.name())
}

impl Visit for TextVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if shown(field) {
            self.0.record_debug(field, value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if shown(field) {
            self.0.record_str(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if shown(field) {
            self.0.record_error(field, value);
        }
    }
}

impl VisitOutput<fmt::Result> for TextVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl VisitFmt for TextVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}

#[cfg(test)]
mod tests {
    use crate::telemetry::tests::capture;
    use crate::telemetry::{LogFormat, reconcile_span};

    #[test]
    fn text_has_no_ansi_escapes_unless_asked() {
        let log = || {
            let span = reconcile_span("DockerMachine", "ns", "m1");
            let _entered = span.enter();
            tracing::warn!(error = "boom", "reconcile failed");
        };
        let plain = capture(LogFormat::Text, false, log);
        assert!(!plain.contains("\x1b["), "{plain:?}");
        assert!(
            plain.contains("reconcile{controller=dockermachine namespace=ns name=m1 reconcileID="),
            "{plain}"
        );
        assert!(
            plain.contains("reconcile failed") && plain.contains("error=\"boom\""),
            "{plain}"
        );
        assert!(!plain.contains("controllerGroup"), "{plain}");
        assert_eq!(plain.matches('\n').count(), 1, "{plain}");
        let coloured = capture(LogFormat::Text, true, log);
        assert!(coloured.contains("\x1b["), "{coloured:?}");
    }
}
