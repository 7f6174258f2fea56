//! JEDI's split rules: a task's `splitRule` column holds `TAG=value` pairs, comma-separated,
//! where each tag is a two-letter abbreviation of a rule's name (`ES` for `nEventsPerWorker`).
//! Listings for people show them by name ([`decode`]), as upstream's task details do.
//!
//! The table is upstream's set of tags; a tag not in it is shown as it is stored.

/// Every rule JEDI knows: its name and its two-letter tag.
pub const RULES: &[(&str, &str)] = &[
    ("allowEmptyInput", "AE"),
    ("allowIncompleteInDS", "AI"),
    ("addNthFieldToLFN", "AN"),
    ("allowPartialFinish", "AP"),
    ("altStageOut", "AT"),
    ("avoidVP", "AV"),
    ("maxCoreCount", "CC"),
    ("cloudAsVO", "CV"),
    ("ddmBackEnd", "DE"),
    ("disableAutoFinish", "DF"),
    ("disableReassign", "DI"),
    ("debugMode", "DM"),
    ("disableAutoRetry", "DR"),
    ("dynamicNumEvents", "DY"),
    ("nEsConsumers", "EC"),
    ("nEventsPerInput", "EI"),
    ("encJobParams", "EJ"),
    ("nEventsPerWorker", "ES"),
    ("firstContentsFeed", "FC"),
    ("failGoalUnreached", "FG"),
    ("fineGrainedProc", "FP"),
    ("firstEvent", "FT"),
    ("fullChain", "FU"),
    ("groupBoundaryID", "GB"),
    ("hpoWorkflow", "HO"),
    ("instantiateTmplSite", "IA"),
    ("inFilePosEvtNum", "IF"),
    ("ipStack", "IK"),
    ("allowInputLAN", "IL"),
    ("ignoreMissingInDS", "IM"),
    ("intermediateTask", "IN"),
    ("ipConnectivity", "IP"),
    ("inputPreStaging", "IS"),
    ("instantiateTmpl", "IT"),
    ("allowInputWAN", "IW"),
    ("noLoopingCheck", "LC"),
    ("useLocalIO", "LI"),
    ("limitedSites", "LS"),
    ("loadXML", "LX"),
    ("minCpuEfficiency", "MC"),
    ("messageDriven", "MD"),
    ("mergeEsOnOS", "ME"),
    ("nMaxFilesPerJob", "MF"),
    ("maxJumboPerSite", "MJ"),
    ("maxNumJobs", "MN"),
    ("mergeOutput", "MO"),
    ("multiStepExec", "MS"),
    ("maxWalltime", "MW"),
    ("maxEventsPerJob", "MX"),
    ("noExecStrCnv", "NC"),
    ("notDiscardEvents", "ND"),
    ("nEventsPerJob", "NE"),
    ("nFilesPerJob", "NF"),
    ("nGBPerJob", "NG"),
    ("noInputPooling", "NI"),
    ("nJumboJobs", "NJ"),
    ("noAutoPause", "NP"),
    ("nSitesPerJob", "NS"),
    ("nChunksToWait", "NT"),
    ("noWaitParent", "NW"),
    ("orderInputBy", "OI"),
    ("orderByLB", "OL"),
    ("onSiteMerging", "OM"),
    ("osMatching", "OS"),
    ("onlyTagsForFC", "OT"),
    ("pushStatusChanges", "PC"),
    ("pushJob", "PJ"),
    ("pfnList", "PL"),
    ("putLogToOS", "PO"),
    ("runUntilClosed", "RC"),
    ("registerDatasets", "RD"),
    ("registerEsFiles", "RE"),
    ("respectLB", "RL"),
    ("retryModuleRules", "RM"),
    ("reuseSecOnDemand", "RO"),
    ("releasePerLB", "RP"),
    ("respectSplitRule", "RR"),
    ("randomSeed", "RS"),
    ("retryRamOffset", "RX"),
    ("retryRamStep", "RY"),
    ("retryRamMax", "RZ"),
    ("resurrectConsumers", "SC"),
    ("switchEStoNormal", "SE"),
    ("stayOutputOnSite", "SO"),
    ("scoutSuccessRate", "SS"),
    ("useSecrets", "ST"),
    ("segmentedWork", "SW"),
    ("totNumJobs", "TJ"),
    ("tgtMaxOutputForNG", "TN"),
    ("t1Weight", "TW"),
    ("useBuild", "UB"),
    ("useJobCloning", "UC"),
    ("useRealNumEvents", "UE"),
    ("useFileAsSourceLFN", "UF"),
    ("usePrePro", "UP"),
    ("useScout", "US"),
    ("usePrefetcher", "UT"),
    ("useExhausted", "UX"),
    ("useZipToPin", "UZ"),
    ("writeInputToFile", "WF"),
    ("workflowHoldup", "WH"),
    ("waitInput", "WI"),
    ("maxAttemptES", "XA"),
    ("decAttOnFailedES", "XF"),
    ("maxAttemptEsJob", "XJ"),
    ("nEventsPerMergeJob", "ZE"),
    ("nFilesPerMergeJob", "ZF"),
    ("nGBPerMergeJob", "ZG"),
    ("nMaxFilesPerMergeJob", "ZM"),
];

/// The rules whose values are codes, with what each code means (shown instead of the code).
const VALUE_LABELS: &[(&str, &[(&str, &str)])] = &[
    (
        "US",
        &[
            ("1", "no_use"),
            ("2", "will_update_requirements"),
            ("3", "updated_requirements"),
        ],
    ),
    (
        "LS",
        &[
            ("1", "with_allowlist"),
            ("2", "with_denylist"),
            ("3", "with_allow_and_denylist"),
        ],
    ),
    ("IP", &[("1", "full"), ("2", "http")]),
    ("IK", &[("4", "IPv4"), ("6", "IPv6")]),
    ("AT", &[("1", "on"), ("2", "off"), ("3", "force")]),
    ("IL", &[("1", "use"), ("2", "only")]),
    (
        "UP",
        &[
            ("1", "toPreProcess"),
            ("2", "preProcessed"),
            ("3", "postPProcess"),
        ],
    ),
    (
        "RD",
        &[("1", "registering"), ("2", "registered"), ("3", "moving")],
    ),
    ("IS", &[("0", "notUse"), ("1", "use")]),
    ("FC", &[("0", "False"), ("1", "True")]),
    ("FU", &[("1", "only"), ("2", "require"), ("3", "capable")]),
    ("OI", &[("1", "eventsAlignment")]),
];

/// The tag that may carry a comma-separated list as its value (`AN=1,2,3`).
const LIST_TAG: &str = "AN";

/// The name of the rule with this tag.
pub fn name_of(tag: &str) -> Option<&'static str> {
    RULES.iter().find(|(_, t)| *t == tag).map(|(name, _)| *name)
}

/// A split-rule string with each tag replaced by its rule's name and each coded value by its
/// meaning: `ES=5,US=2` is `nEventsPerWorker=5,useScout=will_update_requirements`. The parts of
/// an `AN` list are joined with `_` (`AN=1,2` is `addNthFieldToLFN=1_2`, as upstream shows it);
/// anything that is not `TAG=value` with a known tag is kept as it is.
pub fn decode(rules: &str) -> String {
    // (tag, value parts) per rule; a tag of None is a token kept verbatim.
    let mut parsed: Vec<(Option<&str>, Vec<&str>)> = Vec::new();
    for token in rules.split(',').filter(|t| !t.is_empty()) {
        let tag = token
            .get(..2)
            .filter(|tag| token.as_bytes().get(2) == Some(&b'=') && name_of(tag).is_some());
        match (tag, parsed.last_mut()) {
            (Some(tag), _) => parsed.push((Some(tag), vec![&token[3..]])),
            (None, Some((Some(LIST_TAG), parts))) => parts.push(token),
            (None, _) => parsed.push((None, vec![token])),
        }
    }
    parsed
        .into_iter()
        .map(|(tag, parts)| match tag {
            None => parts.concat(),
            Some(tag) => {
                let value = parts.join("_");
                let label = VALUE_LABELS
                    .iter()
                    .find(|(t, _)| *t == tag)
                    .and_then(|(_, labels)| labels.iter().find(|(code, _)| *code == value))
                    .map_or(value.as_str(), |(_, label)| label);
                format!("{}={label}", name_of(tag).unwrap_or(tag))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_become_names_and_codes_their_meaning() {
        assert_eq!(
            decode("ES=5,XA=3,US=2"),
            "nEventsPerWorker=5,maxAttemptES=3,useScout=will_update_requirements"
        );
        assert_eq!(
            decode("FC=1,IS=0"),
            "firstContentsFeed=True,inputPreStaging=notUse"
        );
        // A code with no meaning listed stays a number.
        assert_eq!(decode("US=9"), "useScout=9");
    }

    #[test]
    fn an_lists_are_joined_and_unknown_tokens_kept() {
        assert_eq!(
            decode("AN=1,2,3,AE=1"),
            "addNthFieldToLFN=1_2_3,allowEmptyInput=1"
        );
        assert_eq!(decode("QQ=1,odd,NF=2"), "QQ=1,odd,nFilesPerJob=2");
        assert_eq!(decode(""), "");
        // A token after a rule other than AN is its own entry.
        assert_eq!(decode("NF=2,3"), "nFilesPerJob=2,3");
    }

    #[test]
    fn every_tag_is_two_letters_and_unique() {
        for (i, (name, tag)) in RULES.iter().enumerate() {
            assert_eq!(tag.len(), 2, "{name}");
            assert!(RULES[i + 1..].iter().all(|(n, t)| n != name && t != tag));
        }
        for (tag, _) in VALUE_LABELS {
            assert!(name_of(tag).is_some(), "{tag}");
        }
    }
}
