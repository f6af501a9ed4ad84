//! The parser's unit tests: what each header and step reads as, and that
//! every wrong line is one `FILE:LINE: what is wrong` error.

use msix_accel::{BarOffset, EventKind, Policy};
use testvm::Width;

use super::*;
use crate::parse::scenario_text;
use msix_rig::rig::RigLayout;

/// `text` is refused at `line` with a message containing `needle`.
fn assert_refused(text: &str, line: u32, needle: &str) {
    let e = parse("f.scn", text).unwrap_err();
    assert_eq!(e.line, Some(line), "{text:?}: {e}");
    assert!(e.to_string().starts_with(&format!("f.scn:{line}: ")), "{e}");
    assert!(e.message.contains(needle), "{text:?}: {e}");
}

fn steps(text: &str) -> Vec<Step> {
    parse("s.scn", text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .steps
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

#[test]
fn the_example_of_the_contract_parses() {
    let text = "vectors 4\nmsix enable\nguest msg 0 vector=0x40 cpu=0\nguest write32 table+0x0c 0 # unmask\ndevice fire 0\nexpect irq 0x40 = 1\nguest read32 table+0x00 expect=0xfee00000\nexpect pending 0 = 0\n";
    let s = parse("x.scn", text).unwrap();
    assert_eq!(s.vectors, 4);
    assert_eq!(s.policies, vec![Policy::Fast]);
    assert_eq!(s.steps.len(), 7);
    assert_eq!(s.steps[2].0, 4);
    assert_eq!((s.devices, s.x2apic_api, s.layout), (1, true, None));
}

#[test]
fn errors_name_file_and_line() {
    let cases = [
        ("vectors 4\nguest write32 table+0x0c\n", 2, "takes 4 words"),
        (
            "vectors 4\nguest write32 table+0x1000 0\n",
            2,
            "outside table",
        ),
        ("vectors 4\ndevice fire 4\n", 2, "entry 4"),
        ("msix enable\nvectors 4\n", 2, "after the first step"),
        ("vectors 0\n", 1, "out of range"),
        ("guest@1 read32 table+0\n", 1, "vCPU 1"),
        ("expect irq 0x40 <= 1\n", 1, "= or >="),
        (
            "begin concurrent 3\nguest read32 table+0 expect=1\nend\n",
            2,
            "not allowed",
        ),
        (
            "begin concurrent 3\nguest read32 table+0\n",
            1,
            "without `end`",
        ),
        ("policy fastest\n", 1, "unknown policy"),
        ("guest write8 table+0 0x100\n", 1, "does not fit"),
        ("frobnicate\n", 1, "unknown step"),
        ("vectors 4\nguest msg 0 vector=0x20 cpu=0\n", 2, "reserved"),
        ("guest msg 0 vector=0x1f cpu=0\n", 1, "reserved"),
        ("guest msg 0 vector=0xfe cpu=0\n", 1, "reserved"),
        ("expect irq 0x20 = 1\n", 1, "0x20 is the sentinel"),
        ("expect irq@0 0 >= 1\n", 1, "reserved"),
        ("expect irq 0xff = 0\n", 1, "reserved"),
        ("guest window 0x20 open\n", 1, "reserved"),
        ("expect window 0xfe = 0\n", 1, "reserved"),
        ("device fire 0 count=99999999999\n", 1, "1..=1000000"),
        ("device fire 0 count=0\n", 1, "1..=1000000"),
        (
            "begin concurrent 99999999999\nguest read32 table+0\nend\n",
            1,
            "1..=100000",
        ),
        (
            "begin concurrent 0\nguest read32 table+0\nend\n",
            1,
            "1..=100000",
        ),
    ];
    for (text, line, needle) in cases {
        assert_refused(text, line, needle);
    }
}

#[test]
fn a_file_without_steps_is_an_error_naming_the_file_only() {
    for text in [
        "",
        "# nothing\n\n",
        "vectors 4\npolicies fast trap\n",
        "devices 2\nlayout table=0:0 pba=1:0\n",
    ] {
        let e = parse("empty.scn", text).unwrap_err();
        assert_eq!(e.line, None, "{text:?}");
        assert_eq!(
            e.to_string(),
            "empty.scn: no steps: an empty scenario checks nothing"
        );
    }
}

#[test]
fn counts_at_their_bounds_are_accepted() {
    let s =
        steps("device fire 0 count=1000000\nbegin concurrent 100000\nguest read32 table+0\nend\n");
    assert_eq!(
        s[0],
        Step::Fire {
            device: 0,
            entry: 0,
            count: MAX_FIRE_COUNT
        }
    );
    assert!(matches!(
        s[1],
        Step::Concurrent {
            repeat: MAX_CONCURRENT_REPEAT,
            ..
        }
    ));
}

#[test]
fn device_vectors_0x21_to_0xfd_are_accepted() {
    let s = steps(
        "guest msg 0 vector=0x21 cpu=0\nguest msg 1 vector=0xfd cpu=0\nexpect irq 0x21 = 0\nexpect irq 0xfd >= 0\n",
    );
    assert_eq!(s.len(), 4);
    assert!(matches!(s[1], Step::Msg { vector: 0xFD, .. }));
    assert!(matches!(s[2], Step::ExpectIrq { vector: 0x21, .. }));
}

#[test]
fn policies_header_lists_every_policy_to_run() {
    let s = parse(
        "p.scn",
        "policies fast trap\nsource maskable\nmsix enable\n",
    )
    .unwrap();
    assert_eq!(s.policies, vec![Policy::Fast, Policy::Trap]);
    assert!(s.maskable);
}

#[test]
fn devices_header_sets_the_device_count_from_1_to_4() {
    for n in 1..=4u8 {
        let s = parse("d.scn", &format!("devices {n}\nmsix enable\n")).unwrap();
        assert_eq!(s.devices, n);
    }
    assert_refused(
        "devices 0\nmsix enable\n",
        1,
        "devices 0 out of range 1..=4",
    );
    assert_refused(
        "devices 5\nmsix enable\n",
        1,
        "devices 5 out of range 1..=4",
    );
    assert_refused("devices\n", 1, "missing value");
    assert_refused("devices 2 3\n", 1, "unexpected \"3\" after devices");
    assert_refused(
        "msix enable\ndevices 2\n",
        2,
        "header `devices` after the first step",
    );
}

#[test]
fn every_step_that_takes_dev_addresses_that_device() {
    let s = steps(
        "devices 3\n\
         device fire 1 dev=2\n\
         device fire 1 count=5 dev=1\n\
         device storm start 0,1 dev=2\n\
         device storm stop\n\
         msix enable dev=1\n\
         msix mask-all dev=2\n\
         expect pending 3 = 1 dev=2\n\
         guest msg 2 vector=0x41 cpu=0 dev=1\n\
         device fire 1\n\
         msix unmask-all dev=0\n",
    );
    assert_eq!(
        s,
        vec![
            Step::Fire {
                device: 2,
                entry: 1,
                count: 1
            },
            Step::Fire {
                device: 1,
                entry: 1,
                count: 5
            },
            Step::StormStart {
                device: 2,
                entries: vec![0, 1]
            },
            Step::StormStop,
            Step::Msix {
                device: 1,
                action: MsixAction::Enable
            },
            Step::Msix {
                device: 2,
                action: MsixAction::MaskAll
            },
            Step::ExpectPending {
                device: 2,
                entry: 3,
                pending: true
            },
            Step::Msg {
                vcpu: 0,
                device: 1,
                entry: 2,
                vector: 0x41,
                cpu: 0
            },
            Step::Fire {
                device: 0,
                entry: 1,
                count: 1
            },
            Step::Msix {
                device: 0,
                action: MsixAction::UnmaskAll
            },
        ]
    );
}

#[test]
fn a_device_the_vm_lacks_is_a_line_error() {
    for (text, line) in [
        ("device fire 0 dev=1\n", 1),
        ("devices 2\ndevice fire 0 dev=2\n", 2),
        ("devices 2\ndevice storm start 0 dev=2\n", 2),
        ("devices 2\nmsix enable dev=2\n", 2),
        ("devices 2\nexpect pending 0 = 0 dev=2\n", 2),
        ("devices 2\nguest msg 0 vector=0x40 cpu=0 dev=2\n", 2),
        ("devices 2\nguest read32 table2+0\n", 2),
        ("devices 2\nguest read32 pba2+0\n", 2),
        ("devices 2\nguest read32 bar0.2+0\n", 2),
        ("devices 2\nexpect event route-rejected dev=2\n", 2),
    ] {
        assert_refused(text, line, "but the VM has");
    }
    assert_refused("devices 2\nmsix enable dev=x\n", 2, "not a number");
    assert_refused("msix enable dev=0 dev=0\n", 1, "msix takes 2 words");
    assert_refused("device storm stop dev=0\n", 1, "takes 3 words");
    assert_refused("expect exits = 1 dev=0\n", 1, "takes 4 words");
}

#[test]
fn regions_name_a_device_by_suffix() {
    let s = steps(
        "devices 4\n\
         guest read32 table+0x0c\n\
         guest write32 table3+0x1c 1\n\
         guest read64 pba1+0\n\
         guest read32 bar2+0x10\n\
         guest write8 bar5.3+0x1ffff 0xff\n\
         guest read32 bar0.0+0\n",
    );
    let regions: Vec<(u8, Region, u64)> = s
        .iter()
        .map(|s| match s {
            Step::Guest { access, .. } => (access.device, access.region, access.offset),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        regions,
        vec![
            (0, Region::Table, 0x0c),
            (3, Region::Table, 0x1c),
            (1, Region::Pba, 0),
            (0, Region::Bar(2), 0x10),
            (3, Region::Bar(5), 0x1ffff),
            (0, Region::Bar(0), 0),
        ]
    );
    assert!(matches!(
        s[4],
        Step::Guest {
            access: Access {
                write: true,
                width: Width::W8,
                value: 0xff,
                ..
            },
            ..
        }
    ));
}

#[test]
fn a_bad_region_is_a_line_error() {
    assert_refused("guest read32 bar6+0\n", 1, "expected table, pba or barB");
    assert_refused("guest read32 bar+0\n", 1, "expected table, pba or barB");
    assert_refused("guest read32 barx.1+0\n", 1, "expected table, pba or barB");
    assert_refused("guest read32 msix+0\n", 1, "expected table, pba or barB");
    assert_refused("guest read32 tablex+0\n", 1, "expected table, pba or barB");
    assert_refused("guest read32 pba-1+0\n", 1, "expected table, pba or barB");
    assert_refused("guest read32 table\n", 1, "expected table+OFFSET");
    assert_refused(
        "guest read32 bar0+0x20000\n",
        1,
        "outside bar0 (its window is 0x20000",
    );
    assert_refused(
        "layout table=0:0 pba=1:0 bar=0x100\nguest read32 bar1+0x100\n",
        2,
        "outside bar1 (its window is 0x100",
    );
    assert_refused("vectors 8\nguest read32 pba+0x8\n", 2, "outside pba");
}

#[test]
fn x2apic_api_header_is_on_unless_turned_off() {
    assert!(
        parse("x.scn", "x2apic-api on\nmsix enable\n")
            .unwrap()
            .x2apic_api
    );
    assert!(
        !parse("x.scn", "x2apic-api off\nmsix enable\n")
            .unwrap()
            .x2apic_api
    );
    assert_refused("x2apic-api yes\n", 1, "expected on or off");
    assert_refused("x2apic-api\n", 1, "missing value");
    assert_refused("msix enable\nx2apic-api off\n", 2, "after the first step");
}

#[test]
fn layout_header_places_table_and_pba_in_any_bar() {
    let s = parse(
        "l.scn",
        "vectors 8\nlayout table=0:0 pba=0:0x800\nmsix enable\n",
    )
    .unwrap();
    assert_eq!(
        s.layout,
        Some(RigLayout {
            table: BarOffset::new(0, 0),
            pba: BarOffset::new(0, 0x800),
            bar_size: None
        })
    );
    let s = parse("l.scn", "layout pba=1:0 bar=256 table=0:0\nmsix enable\n").unwrap();
    assert_eq!(
        s.layout,
        Some(RigLayout {
            table: BarOffset::new(0, 0),
            pba: BarOffset::new(1, 0),
            bar_size: Some(256)
        })
    );
    // The layout checks against `vectors` even when `vectors` comes later.
    let s = parse(
        "l.scn",
        "layout table=5:0x1000 pba=2:0x1ff8\nvectors 64\nmsix enable\n",
    )
    .unwrap();
    assert_eq!(s.vectors, 64);
    assert_eq!(
        s.layout.map(|l| (l.table.bir, l.pba.offset)),
        Some((5, 0x1ff8))
    );
}

#[test]
fn a_layout_that_cannot_be_is_a_line_error() {
    let cases = [
        (
            "layout table=6:0 pba=0:0x1000\n",
            1,
            "table BIR 6 out of range 0..=5",
        ),
        (
            "layout table=0:0 pba=7:0\n",
            1,
            "pba BIR 7 out of range 0..=5",
        ),
        (
            "layout table=0:0x204 pba=1:0\n",
            1,
            "table offset 0x204 is not 8-byte aligned",
        ),
        (
            "layout table=0:0 pba=1:4\n",
            1,
            "pba offset 0x4 is not 8-byte aligned",
        ),
        (
            "layout table=0:0\n",
            1,
            "needs table=BIR:OFFSET and pba=BIR:OFFSET",
        ),
        ("layout table=0 pba=1:0\n", 1, "expected table=BIR:OFFSET"),
        ("layout table=0:0 pba=1:0 bar=0x300\n", 1, "power of two"),
        (
            "layout table=0:0 pba=1:0 bar=0x40000\n",
            1,
            "power of two up to 0x20000",
        ),
        (
            "layout table=0:0 pba=1:0 table=0:0\n",
            1,
            "table= given twice",
        ),
        (
            "layout table=0:0 pba=1:0 frob=1\n",
            1,
            "unknown key \"frob\"",
        ),
        ("layout table=0:0 pba=1:0 bar\n", 1, "expected KEY=VALUE"),
        (
            "layout table=0:0x100000000 pba=1:0\n",
            1,
            "offset 4294967296 out of range",
        ),
        // Checked once the header is complete, against `vectors`: the
        // error names the layout's line.
        (
            "layout table=0:0 pba=0:0x40\nvectors 8\nmsix enable\n",
            1,
            "overlap",
        ),
        (
            "layout table=0:0x100 pba=0:0x170\nmsix enable\n",
            1,
            "overlap",
        ),
        (
            "vectors 16\nlayout table=0:0 pba=1:0 bar=128\nmsix enable\n",
            2,
            "the table (0x100 bytes at 0:0x0) does not fit its BAR of 0x80 bytes",
        ),
        (
            "layout table=0:0 pba=1:0x1fffc\nmsix enable\n",
            1,
            "pba offset 0x1fffc is not 8-byte aligned",
        ),
        (
            "layout table=0:0 pba=1:0x20000\nmsix enable\n",
            1,
            "the PBA (0x8 bytes at 1:0x20000) does not fit",
        ),
        (
            "msix enable\nlayout table=0:0 pba=1:0\n",
            2,
            "after the first step",
        ),
    ];
    for (text, line, needle) in cases {
        assert_refused(text, line, needle);
    }
}

#[test]
fn with_a_layout_table_and_pba_windows_stay_inside_their_bars() {
    // Table of 8 entries at 0x200 of a 0x400-byte BAR: 0x200 bytes left.
    let text = "layout table=0:0x200 pba=1:0 bar=0x400\nguest read32 table+0x1fc\n";
    assert!(matches!(
        steps(text)[0],
        Step::Guest {
            access: Access {
                region: Region::Table,
                offset: 0x1fc,
                ..
            },
            ..
        }
    ));
    assert_refused(
        "layout table=0:0x200 pba=1:0 bar=0x400\nguest read32 table+0x200\n",
        2,
        "outside table (its window is 0x200 bytes)",
    );
    // Without a BAR size, the table's page as before.
    assert_refused(
        "layout table=0:0 pba=2:0\nguest read32 table+0x1000\n",
        2,
        "outside table (its window is 0x1000 bytes)",
    );
}

#[test]
fn expect_event_names_a_kind_and_optionally_an_entry_and_a_device() {
    let s = steps(
        "devices 2\n\
         expect event route-rejected\n\
         expect event route-rejected entry=3\n\
         expect event gsi-exhausted dev=1 entry=7\n\
         expect event fast-path-unserviced dev=1\n",
    );
    assert_eq!(
        s,
        vec![
            Step::ExpectEvent {
                device: 0,
                kind: EventKind::RouteRejected,
                entry: None
            },
            Step::ExpectEvent {
                device: 0,
                kind: EventKind::RouteRejected,
                entry: Some(3)
            },
            Step::ExpectEvent {
                device: 1,
                kind: EventKind::GsiExhausted,
                entry: Some(7)
            },
            Step::ExpectEvent {
                device: 1,
                kind: EventKind::FastPathUnserviced,
                entry: None
            },
        ]
    );
}

#[test]
fn a_bad_expect_event_is_a_line_error() {
    assert_refused("expect event\n", 1, "expect event KIND");
    assert_refused(
        "expect event RouteRejected\n",
        1,
        "expected one of route-rejected, gsi-exhausted",
    );
    assert_refused(
        "expect event route-rejected entry=8\n",
        1,
        "entry 8 but the table has 8",
    );
    assert_refused(
        "expect event route-rejected entry=1 entry=2\n",
        1,
        "given twice",
    );
    assert_refused(
        "expect event route-rejected vector=1\n",
        1,
        "expected entry=E or dev=K",
    );
    assert_refused(
        "expect event route-rejected dev=1\n",
        1,
        "device 1 but the VM has 1",
    );
}

#[test]
fn expect_unclaimed_counts_like_expect_exits() {
    let s = steps("expect unclaimed = 2\nexpect unclaimed <= 0\n");
    assert_eq!(
        s,
        vec![
            Step::ExpectUnclaimed {
                cmp: Cmp::Eq,
                count: 2
            },
            Step::ExpectUnclaimed {
                cmp: Cmp::Le,
                count: 0
            },
        ]
    );
    assert_refused(
        "expect unclaimed >= 1\n",
        1,
        "expect unclaimed takes = or <=",
    );
    assert_refused("expect unclaimed = \n", 1, "takes 4 words");
}

#[test]
fn a_binary_is_not_a_scenario_text_file() {
    for bytes in [
        vec![0x7f, b'E', b'L', b'F', 0xff, 0xfe],
        b"msix enable\0\n".to_vec(),
    ] {
        let e = scenario_text("x.scn", bytes).unwrap_err();
        assert!(e.starts_with("x.scn: not a scenario text file"), "{e}");
    }
    assert_eq!(
        scenario_text("x.scn", b"msix enable\n".to_vec()).as_deref(),
        Ok("msix enable\n")
    );
}

#[test]
fn an_unreadable_file_is_named_without_a_line() {
    let e = load(&["/nonexistent/x.scn".to_string()]).unwrap_err();
    assert!(e.starts_with("/nonexistent/x.scn: cannot read: "), "{e}");
}
