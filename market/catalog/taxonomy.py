"""The catalogue's fixed vocabularies, stored as codes and shown in Chinese and English.

Sectors follow the national plan's key fields for high-quality datasets, plus its innovation
fields. A code never changes once used; labels may.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    code: str
    zh: str
    en: str

    def label(self, locale: str) -> str:
        return self.zh if str(locale).startswith("zh") else self.en


def _terms(*rows: tuple[str, str, str]) -> dict[str, Term]:
    return {code: Term(code, zh, en) for code, zh, en in rows}


SECTORS = _terms(
    ("scientific_research", "科学研究", "Scientific research"),
    ("industrial_manufacturing", "工业制造", "Industrial manufacturing"),
    ("agriculture_rural", "农业农村", "Agriculture and rural"),
    ("smart_energy", "智慧能源", "Smart energy"),
    ("transportation", "交通运输", "Transportation"),
    ("financial_services", "金融服务", "Financial services"),
    ("healthcare", "医疗健康", "Healthcare"),
    ("education", "教育教学", "Education"),
    ("ecommerce", "电子商务", "E-commerce"),
    ("human_resources", "人力资源", "Human resources"),
    ("culture_tourism", "文化旅游", "Culture and tourism"),
    ("emergency_management", "应急管理", "Emergency management"),
    ("meteorological_services", "气象服务", "Meteorological services"),
    ("green_low_carbon", "绿色低碳", "Green and low-carbon"),
    ("public_security", "公共安全", "Public security"),
    ("urban_governance", "城市治理", "Urban governance"),
    ("housing_construction", "住房城乡建设", "Housing and construction"),
    ("natural_resources", "自然资源", "Natural resources"),
    ("low_altitude_economy", "低空经济", "Low-altitude economy"),
    ("embodied_ai", "具身智能", "Embodied AI"),
    ("intelligent_driving", "智能驾驶", "Intelligent driving"),
    ("smart_ocean", "智慧海洋", "Smart ocean"),
    ("bio_manufacturing", "生物制造", "Bio-manufacturing"),
)

MODALITIES = _terms(
    ("text", "文本", "Text"),
    ("code", "代码", "Code"),
    ("image", "图像", "Image"),
    ("audio", "音频", "Audio"),
    ("video", "视频", "Video"),
    ("point_cloud", "点云", "Point cloud"),
    ("time_series", "时间序列", "Time series"),
    ("scientific_data", "科学数据", "Scientific data"),
    ("knowledge_graph", "知识图谱", "Knowledge graph"),
)

AI_STAGES = _terms(
    ("pretraining", "预训练", "Pre-training"),
    ("instruction_tuning", "指令微调", "Instruction tuning"),
    ("reinforcement_learning", "强化学习", "Reinforcement learning"),
    ("evaluation", "评测", "Evaluation"),
    ("knowledge_base", "知识库 / 检索增强", "Knowledge base / retrieval"),
)

PERSONAL_INFORMATION = _terms(
    ("none", "不含个人信息", "No personal information"),
    ("deidentified", "已去标识化", "De-identified"),
    ("anonymized", "已匿名化", "Anonymized"),
    ("with_consent", "含个人信息（已取得同意）", "Contains personal information, with consent"),
)

SENSITIVITY = _terms(
    ("public", "公开", "Public"),
    ("general", "一般数据", "General"),
    ("important", "重要数据", "Important data"),
)

LICENCES = _terms(
    ("commercial_standard", "标准商业许可", "Standard commercial licence"),
    ("commercial_no_redistribution", "商业许可（不可再分发）", "Commercial, no redistribution"),
    ("research_only", "仅限科研", "Research only"),
    ("cc_by_4_0", "CC BY 4.0", "CC BY 4.0"),
    ("cc_by_nc_4_0", "CC BY-NC 4.0", "CC BY-NC 4.0"),
    ("custom", "定制许可", "Custom licence"),
)

# The three-rights split of data property rights (数据产权“三权分置”).
RIGHTS = _terms(
    ("holding", "数据资源持有权", "Data resource holding right"),
    ("usage", "数据加工使用权", "Data processing and usage right"),
    ("operation", "数据产品经营权", "Data product operation right"),
)

# Who takes part in producing and selling a dataset, and so shares in its revenue.
CHAIN_ROLES = _terms(
    ("supplier", "数据提供方", "Supplier"),
    ("processor", "加工标注方", "Processor / annotator"),
    ("exchange", "数据交易所", "Exchange"),
    ("channel", "渠道方", "Channel"),
    ("application", "应用方", "Application partner"),
)

LANGUAGES = _terms(
    ("zh", "中文", "Chinese"),
    ("en", "英文", "English"),
    ("ja", "日文", "Japanese"),
    ("ko", "韩文", "Korean"),
    ("multi", "多语种", "Multilingual"),
)

VOCABULARIES = {
    "sector": SECTORS, "modality": MODALITIES, "ai_stage": AI_STAGES,
    "personal_information": PERSONAL_INFORMATION, "sensitivity": SENSITIVITY,
    "licence": LICENCES, "rights": RIGHTS, "chain_role": CHAIN_ROLES, "language": LANGUAGES,
}
